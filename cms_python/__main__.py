"""`python -m cms_python`: the `cms` command."""

from ._cli import main

raise SystemExit(main())
