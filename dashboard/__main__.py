"""``python -m plstream.dashboard``: same arguments as ``plstream dashboard``."""

import sys

from plstream.dashboard.views.app import main

sys.exit(main())
