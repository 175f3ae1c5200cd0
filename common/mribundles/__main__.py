"""`python -m mribundles ...` runs the command line (see mribundles.cli)."""

import sys

from mribundles.cli import main

sys.exit(main())
