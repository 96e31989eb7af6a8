"""`python -m labkit`: the command line (see labkit.cli)."""

from labkit.cli import main

raise SystemExit(main())
