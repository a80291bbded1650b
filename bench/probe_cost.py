"""Probe cost per packet: kernel.bpf_stats_enabled run_time_ns / run_cnt of
every ovslat BPF program, while a fixed number of UDP packets crosses one
measured veth. A benchmark, not a test: it prints figures, asserts nothing.

    sudo ./dev bench [--packets 20000] [--attach auto]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ovslat import testbed  # noqa: E402
from ovslat.bpf_loader import EngineOptions, open_program  # noqa: E402
from ovslat.collector import Collector  # noqa: E402
from ovslat.filters import Filters  # noqa: E402
from ovslat.kernel import KernelInfo  # noqa: E402
from ovslat.netlink import resolve_all  # noqa: E402

STATS = "/proc/sys/kernel/bpf_stats_enabled"


@contextlib.contextmanager
def bpf_stats():
    with open(STATS) as f:
        saved = f.read().strip()
    with open(STATS, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(STATS, "w") as f:
            f.write(saved)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--attach", default="auto")
    args = ap.parse_args()
    testbed.require_root()
    with testbed.Netns("bench") as ns, bpf_stats():
        testbed.veth("ovb-a0", ns, "ovb-a1", "198.18.20.1", "198.18.20.2")
        testbed.ping(ns, "198.18.20.1", 1)
        prog = open_program(KernelInfo.probe(), EngineOptions(backend=args.attach))
        try:
            prog.set_filters(Filters().config_fields())
            collector = Collector(prog, resolve_all(["ovb-a0"]))
            testbed.send_udp(ns, "198.18.20.1", 9, args.packets)
            snap = collector.read()
            per_prog = prog.probe_cost_by_program()
        finally:
            prog.close()
    st = snap.interfaces[0]
    c, cost = st.counters, snap.cost
    print(
        f"backend {snap.backend}: {args.packets} UDP packets sent, "
        f"{c.enqueued} enqueued, {c.received} received, {c.ip_rcv} at ip_rcv"
    )
    print(f"{'program':<40} {'calls':>9} {'ns/call':>9} {'ns/packet':>10}")
    for name, (ns_, cnt) in sorted(per_prog.items()):
        per_call = ns_ / cnt if cnt else 0.0
        print(f"{name:<40} {cnt:>9} {per_call:>9.1f} {ns_ / max(c.enqueued, 1):>10.1f}")
    print(
        f"{'total':<40} {cost.run_cnt:>9} {cost.ns_per_call or 0:>9.1f} "
        f"{cost.ns_per_packet or 0:>10.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
