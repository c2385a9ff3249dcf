"""``python -m sealcall.cli``."""

import sys

from . import main

sys.exit(main())
