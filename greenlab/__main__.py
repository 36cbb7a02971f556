"""`python -m greenlab` is the `greenlab` command."""

import sys

from greenlab.cli import main

sys.exit(main())
