"""`python -m bridge` is the `patron-bridge` command."""

from bridge.cli import main

raise SystemExit(main())
