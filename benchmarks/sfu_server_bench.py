"""The sealcall SFU server alone under the sfu-bench load (``sealcall sfu-bench`` runs it side by
side with Janus): CPU microseconds per forwarded packet, latency and RSS per participant.

Run: ``python benchmarks/sfu_server_bench.py [--json] [--seconds S] [--loads 2x4,4x8]``.
"""

import sys

from sealcall.bench.sfu_bench import main_alone

if __name__ == "__main__":
    sys.exit(main_alone("sealcall", (__doc__ or "").splitlines()[0]))
