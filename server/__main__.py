"""`python -m server COMMAND ...`: the same as the `chatdoc` console script (tests and benchmarks spawn
this, so they need no installed script)."""

import sys

from .cli import main

sys.exit(main())
