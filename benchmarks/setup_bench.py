"""Where the setup time of a video call goes: the same as ``sealcall setup-bench``.

Run: ``python benchmarks/setup_bench.py [--json] [--calls N]``
(``--homeserver URL --alice @a:hs=PW --bob @b:hs=PW`` for another homeserver).
"""

import sys

from sealcall.cli import main

if __name__ == "__main__":
    sys.exit(main(["setup-bench", *sys.argv[1:]]))
