"""``python -m exactdgn``: the ``exactdgn`` command (:func:`exactdgn.cli.run`)."""

from .cli import run

run()
