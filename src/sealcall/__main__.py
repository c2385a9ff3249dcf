"""``python -m sealcall``: the same as the ``sealcall`` command."""

import sys

from .cli import main

sys.exit(main())
