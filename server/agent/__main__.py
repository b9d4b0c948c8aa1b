"""`python -m server.agent`: the same as `chatdoc agent`."""

from .main import main

raise SystemExit(main())
