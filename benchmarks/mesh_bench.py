"""One participant's CPU in a 4-party video mesh next to a 1:1 call: ``sealcall mesh-bench``.

Run: ``python benchmarks/mesh_bench.py [--json] [--seconds S]``.
"""

import sys

from sealcall.cli import main

if __name__ == "__main__":
    sys.exit(main(["mesh-bench", *sys.argv[1:]]))
