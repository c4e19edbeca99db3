"""``python -m parley``: the same as the installed ``parley`` script."""

import sys

from parley.cli import main

sys.exit(main())
