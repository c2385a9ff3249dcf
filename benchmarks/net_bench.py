"""A call through TURN across network namespaces under loss, delay and an outage: the same as
``sealcall net-bench``.

Run (as root): ``python benchmarks/net_bench.py [--json] [--seconds S] [--loss 0 5 20]``
"""

import sys

from sealcall.cli import main

if __name__ == "__main__":
    sys.exit(main(["net-bench", *sys.argv[1:]]))
