"""``python -m gapfill``: the same as the ``gapfill`` command."""

import sys

from gapfill.cli import main

sys.exit(main())
