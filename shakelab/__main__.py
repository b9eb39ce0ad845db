"""``python -m shakelab`` is the ``shakelab`` command."""

from shakelab.cli import main

raise SystemExit(main())
