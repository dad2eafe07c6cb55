"""``python -m acqharvest``."""

import sys

from acqharvest.cli import main

sys.exit(main())
