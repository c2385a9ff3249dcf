"""CPU of a plain and an encrypted loopback call, side by side: ``sealcall media-bench``.

Run: ``python benchmarks/media_bench.py [--json] [--seconds S] [--rounds N]``.
"""

import sys

from sealcall.cli import main

if __name__ == "__main__":
    sys.exit(main(["media-bench", *sys.argv[1:]]))
