"""``python -m exactdgn``: the ``exactdgn`` command (:func:`exactdgn.cli.main`)."""

from .cli import main

raise SystemExit(main())
