"""Janus's VideoRoom alone under the sfu-bench load: the baseline our SFU has to beat
(``sealcall sfu-bench`` runs both side by side). Janus (Debian package ``janus``) runs in a
network namespace of its own; per load it prints Janus's CPU microseconds per forwarded packet,
latency and RSS per participant.

Run: ``python benchmarks/janus_baseline.py [--json] [--seconds S] [--loads 2x4,4x8]``.
"""

import sys

from sealcall.bench.sfu_bench import main_alone

if __name__ == "__main__":
    sys.exit(main_alone("janus", (__doc__ or "").splitlines()[0]))
