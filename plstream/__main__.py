"""Allow ``python -m plstream``."""

import sys

from plstream.cli import main

sys.exit(main())
