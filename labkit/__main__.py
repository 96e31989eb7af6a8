"""`python -m labkit`: the command line (see labkit.cli.dispatch)."""

from labkit.cli.dispatch import main

raise SystemExit(main())
