"""Frame protection vs bare AES-GCM, side by side: the same as ``sealcall sframe-bench``.

Run: ``python benchmarks/sframe_bench.py [--json] [--number N] [--rounds R]``.
"""

import sys

from sealcall.cli import main

if __name__ == "__main__":
    sys.exit(main(["sframe-bench", *sys.argv[1:]]))
