"""``python -m exactdgn``: the ``exactdgn`` command (:func:`exactdgn.cli.run`).

:func:`run` imports the command line (numpy, scikit-learn, scipy, ...: about a second) inside
its own Ctrl-C handling: an interrupt during the start-up ends with "exactdgn: interrupted"
and exit status 130, as one during the work does, not with a traceback from inside an import.
This module imports nothing heavy itself (the standard library only).
"""

import os
import sys


def _interrupted() -> None:
    """Exit 130 at once (as :func:`exactdgn.cli.run` does after a handled Ctrl-C)."""
    print("exactdgn: interrupted", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def run() -> None:
    """The ``exactdgn`` program, its start-up (the imports) under the Ctrl-C handling."""
    try:
        from .cli import run as cli_run
    except KeyboardInterrupt:
        _interrupted()
    cli_run()


if __name__ == "__main__":
    run()
