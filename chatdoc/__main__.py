"""`python -m chatdoc`: the same as the `chatdoc` console script."""

from .cli import main

raise SystemExit(main())
