"""ovslat's cost, side by side with no tracing, bpftrace and the seed's
one-process-per-interface workflow, on the same traffic in one run (issue #9).

    sudo .venv/bin/python bench/bench.py [--packets 200000] [--reps 3] [--ifaces 16,256,4096]
                                         [--procs 4] [--attach available|tracepoint,kprobe,...]
                                         [--json FILE] [--lab]

Each rep measures every row once, in a rotated order, with a fresh tool: a C
sender (bench/udp_blast.c, compiled now) pushes a fixed number of UDP
datagrams back to back through a veth into a namespace, where they go
netif_rx -> enqueue_to_backlog -> __netif_receive_skb -> ip_rcv. Per row:
BPF ns per packet (bpf_stats run_time_ns of the tool's own programs / packets),
packets/s at saturation, collector CPU per interval (/proc/PID/stat),
memlock of the tool's maps. Ratios are taken within a rep, then the median.
--lab runs a tiny variant inside the kernel lab (kprobe and fentry).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
from measure import RX_IFACE, Bpftrace, OvslatWatch, Topology, dummy_name  # noqa: E402

BACKENDS = ("fentry", "kprobe", "tracepoint")
START_TIMEOUT_S = 600  # bcc compiles at start: seconds here, minutes under TCG


@dataclass(frozen=True)
class Row:
    kind: str  # none | bpftrace | ovslat | procs
    n: int = 0  # interfaces in the map (ovslat) or processes (procs)
    backend: str = ""
    vxlan: bool = False  # the traffic: VXLAN packets, each holding one datagram

    @property
    def label(self) -> str:
        if self.kind == "none":
            return "no tracing" + (", VXLAN" if self.vxlan else "")
        if self.kind == "bpftrace":
            return "bpftrace minimal.bt, 1 interface"
        if self.kind == "ovslat":
            tunnel = ", VXLAN" if self.vxlan else ""
            return f"ovslat {self.backend}, {self.n} interface(s){tunnel}"
        return f"ovslat {self.backend}, {self.n} processes x 1 interface"

    def ifaces(self) -> list[str]:
        return [RX_IFACE] + [dummy_name(i) for i in range(1, self.n)]


def rows_for(backends: list[str], ifaces: list[int], procs: int) -> list[Row]:
    rows = [Row("none"), Row("bpftrace")]
    for b in backends:
        rows += [Row("ovslat", n, b) for n in sorted({1, procs, *ifaces})]
        rows.append(Row("procs", procs, b))
    # the tunnel parse's cost: the same datagrams inside VXLAN, parsed to the inner one
    rows.append(Row("none", vxlan=True))
    rows += [Row("ovslat", 1, b, vxlan=True) for b in backends]
    return rows


def usable_backends(topo: Topology, wanted: list[str], interval_s: float) -> dict[str, str]:
    """backend -> '' when ovslat attaches with it here, else why not."""
    out = {}
    for b in wanted:
        w = OvslatWatch(topo.rcv.name, [RX_IFACE], b, interval_s, 1)
        try:
            w.ready(START_TIMEOUT_S)
            w.stop(RX_IFACE)
            out[b] = ""
        except RuntimeError:
            w.kill()
            lines = [ln for ln in w.stderr().splitlines() if ln.strip()]
            out[b] = lines[-1] if lines else "did not start"
    return out


def measure_row(topo: Topology, row: Row, a: argparse.Namespace) -> dict:
    tools = []
    try:
        if row.kind == "bpftrace":
            tools = [Bpftrace(RX_IFACE)]
        elif row.kind == "ovslat":
            tools = [OvslatWatch(topo.rcv.name, row.ifaces(), row.backend, a.interval, row.n)]
        elif row.kind == "procs":
            tools = [
                OvslatWatch(topo.rcv.name, [i], row.backend, a.interval, 1) for i in row.ifaces()
            ]
        for t in tools:
            t.ready(START_TIMEOUT_S)
        watches = [t for t in tools if isinstance(t, OvslatWatch)]
        # The collector in its steady state: two reports done (the first reads
        # every slot; the second builds each idle interface's reused interval
        # and its JSON once).
        for w in watches:
            w.wait_intervals(2, START_TIMEOUT_S)
        pids = [t.proc.pid for t in tools]
        cpu0, wall0 = measure.cpu_s(pids), time.monotonic()
        progs0, in0 = measure.prog_stats(pids), topo.ip_in_receives()
        sent, _ = topo.send(a.packets, a.cpu, row.vxlan)  # with bpf_stats: the probes' cost
        progs = measure.prog_stats(pids) - progs0
        with measure.bpf_stats_paused():  # without: the packet rate
            sent_fast, seconds = topo.send(a.packets, a.cpu, row.vxlan)
        received = topo.ip_in_receives() - in0
        for w in watches:
            w.wait_intervals(2 + a.window, 60 + a.window * a.interval * 10)
        if tools and not watches:  # bpftrace: the same window, by the clock
            time.sleep(max(0.0, wall0 + a.window * a.interval - time.monotonic()))
        cpu = measure.cpu_s(pids) - cpu0
        intervals = (time.monotonic() - wall0) / a.interval
        memlock = measure.map_memlock(pids)
        names = measure.prog_names(progs.by_id)
        counted = [t.stop(i) for t, i in zip(tools, row.ifaces(), strict=False)]
    finally:
        for t in tools:
            t.kill()
    by_name: dict[str, list[float]] = {}
    for pid_, (ns, cnt) in progs.by_id.items():
        acc = by_name.setdefault(names.get(pid_, f"id {pid_}"), [0.0, 0.0])
        acc[0] += ns / sent
        acc[1] += cnt / sent
    return {
        "sent": sent + sent_fast,
        "received": received,
        "counted": counted[0] if counted else None,
        "seconds": seconds,
        "pps": sent_fast / seconds,
        "bpf_ns_per_packet": progs.run_time_ns / sent if tools else 0.0,
        "bpf_calls_per_packet": progs.run_cnt / sent if tools else 0.0,
        "bpf_programs": len(progs.by_id),
        "cpu_ms_per_interval": 1000 * cpu / intervals if tools else None,
        "map_memlock_bytes": memlock if tools else 0,
        "programs": {
            k: {"ns_per_packet": v[0], "calls_per_packet": v[1]} for k, v in by_name.items()
        },
    }


def _ratio(x: float | None, y: float | None) -> float | None:
    return None if x is None or not y else x / y


def summarise(rows: list[Row], reps: list[dict[Row, dict]]) -> list[dict]:
    """Median over reps of each figure, and of each ratio taken within a rep."""
    out = []
    for row in rows:
        per_rep = []
        for rep in reps:
            m = dict(rep[row])
            # a VXLAN row against the plain one of its backend: the tunnel's cost
            one = rep.get(Row("ovslat", 1, row.backend))
            m["pps_vs_none"] = _ratio(m["pps"], rep[Row("none", vxlan=row.vxlan)]["pps"])
            m["ns_vs_bpftrace"] = _ratio(
                m["bpf_ns_per_packet"], rep[Row("bpftrace")]["bpf_ns_per_packet"]
            )
            m["ns_vs_ovslat_1"] = _ratio(m["bpf_ns_per_packet"], one and one["bpf_ns_per_packet"])
            m["cpu_vs_ovslat_1"] = _ratio(
                m["cpu_ms_per_interval"], one and one["cpu_ms_per_interval"]
            )
            per_rep.append(m)
        med = {}
        for key in per_rep[0]:
            if key == "programs":
                continue
            values = [m[key] for m in per_rep if m[key] is not None]
            med[key] = statistics.median(values) if values else None
        med["programs"] = per_rep[len(per_rep) // 2]["programs"]
        med["counted_exact"] = all(
            m["counted"] in (None, m["sent"]) and m["received"] == m["sent"] for m in per_rep
        )
        out.append({"label": row.label, "kind": row.kind, "n": row.n, "backend": row.backend,
                    "vxlan": row.vxlan, "median": med, "reps": per_rep})  # fmt: skip
    return out


def targets(summary: list[dict], procs: int) -> list[dict]:
    """The targets of issues #9 and #20 (and #18's VXLAN one), from the medians."""
    by = {(s["kind"], s["n"], s["backend"]): s["median"] for s in summary if not s["vxlan"]}
    vxlan = {s["backend"]: s["median"] for s in summary if s["vxlan"] and s["kind"] == "ovslat"}
    out = []
    for b in sorted({s["backend"] for s in summary if s["backend"]}):
        single = {n: m for (k, n, bb), m in by.items() if k == "ovslat" and bb == b}
        worst = max(single, key=lambda n: single[n]["ns_vs_bpftrace"] or 0)
        out.append(("ns/packet <= bpftrace minimal script", f"{b}, {worst} iface(s)",
                    single[worst]["ns_vs_bpftrace"], 1.0))  # fmt: skip
        top = max(single, key=lambda n: single[n]["ns_vs_ovslat_1"] or 0)
        out.append(("flat from 1 to N interfaces (ns/packet vs 1)", f"{b}, {top} iface(s)",
                    single[top]["ns_vs_ovslat_1"], 1.1))  # fmt: skip
        four = by.get(("procs", procs, b))
        if four and procs in single:
            out.append((f"{procs} interfaces, one process vs {procs} processes (ns/packet)", b,
                        _ratio(single[procs]["bpf_ns_per_packet"], four["bpf_ns_per_packet"]),
                        0.5))  # fmt: skip
        slow = min(single, key=lambda n: single[n]["pps_vs_none"] or 1)
        loss = 1 - (single[slow]["pps_vs_none"] or 1)
        out.append(("max packet rate loss", f"{b}, {slow} iface(s)", loss, 0.10))
        if b in vxlan:  # issue 18: the tunnel parse's cost stays bounded
            out.append(("VXLAN packet vs a plain one (ns/packet)", f"{b}, 1 iface",
                        vxlan[b]["ns_vs_ovslat_1"], 1.25))  # fmt: skip
    return [
        {"target": t, "row": r, "value": v, "limit": lim, "met": v is not None and v <= lim}
        for t, r, v, lim in out
    ]


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def report(summary: list[dict], goals: list[dict], header: list[str]) -> str:
    cols = ("row", "ns/pkt", "x bpftrace", "x 1 iface", "calls/pkt", "kpps", "x none",
            "cpu ms/int", "maps KiB", "exact")  # fmt: skip
    lines = [*header, ""]
    table = [cols]
    for s in summary:
        m = s["median"]
        table.append((
            s["label"], _f(m["bpf_ns_per_packet"], ".0f"), _f(m["ns_vs_bpftrace"], ".2f"),
            _f(m["ns_vs_ovslat_1"], ".2f"), _f(m["bpf_calls_per_packet"], ".2f"),
            _f(m["pps"] / 1000, ".0f"), _f(m["pps_vs_none"], ".3f"),
            _f(m["cpu_ms_per_interval"], ".1f"), _f(m["map_memlock_bytes"] / 1024, ".0f"),
            "yes" if m["counted_exact"] else "NO",
        ))  # fmt: skip
    widths = [max(len(str(r[i])) for r in table) for i in range(len(cols))]
    for r in table:
        lines.append(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    lines.append("")
    top = max([s["n"] for s in summary if s["kind"] == "ovslat"], default=1)
    for s in summary:
        if s["kind"] == "bpftrace" or (s["kind"] == "ovslat" and s["n"] in (1, top)):
            progs = sorted(s["median"]["programs"].items(), key=lambda kv: -kv[1]["ns_per_packet"])
            lines.append(f"{s['label']}, per program (ns/pkt, calls/pkt): " + ", ".join(
                f"{name} {v['ns_per_packet']:.0f} ({v['calls_per_packet']:.2f})"
                for name, v in progs
            ))  # fmt: skip
    lines.append("")
    for g in goals:
        lines.append(
            f"{'met ' if g['met'] else 'MISS'}  {g['target']}: {_f(g['value'], '.3f')} "
            f"(limit {g['limit']:g}) [{g['row']}]"
        )
    return "\n".join(lines)


def run_lab(a: argparse.Namespace) -> int:
    """This bench, tiny, in the kernel lab guest (Debian's kernel under TCG:
    kprobe and fentry exist there; figures are only relative)."""
    inner = [sys.executable, "bench/bench.py", "--attach", a.attach if a.attach != "available"
             else "kprobe,fentry", "--packets", str(min(a.packets, 5000)), "--reps", "1",
             "--ifaces", "16", "--procs", str(a.procs), "--window", "1"]  # fmt: skip
    if a.json:
        inner += ["--json", str(Path(a.json).resolve())]
    vm = Path(__file__).resolve().parent.parent / "tests" / "lab" / "vm.py"
    return subprocess.call([sys.executable, str(vm), "run", "--timeout", "1800", "--", *inner])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--packets", type=int, default=300_000, help="datagrams per send (two sends a row)"
    )
    ap.add_argument("--reps", type=int, default=3, help="times every row is measured")
    ap.add_argument("--ifaces", default="16,256,4096", help="map sizes besides 1 and --procs")
    ap.add_argument("--procs", type=int, default=4, help="single-interface processes row")
    ap.add_argument(
        "--attach", default="available", help="available (every backend that works) or a list"
    )
    ap.add_argument("--interval", type=float, default=1.0, help="ovslat --interval, seconds")
    ap.add_argument("--window", type=int, default=5, help="intervals the CPU figure spans")
    ap.add_argument("--cpu", type=int, default=1, help="CPU the sender is pinned to")
    ap.add_argument("--json", help="write every figure here too")
    ap.add_argument("--lab", action="store_true", help="run a tiny variant in the kernel lab")
    a = ap.parse_args(argv)
    a.iface_counts = [int(x) for x in a.ifaces.split(",") if x]
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.lab:
        return run_lab(a)
    measure.testbed.require_root()
    wanted = list(BACKENDS) if a.attach == "available" else a.attach.split(",")
    n_spare = max([a.procs, *a.iface_counts]) - 1
    with tempfile.TemporaryDirectory(prefix="ovb-") as tmp, measure.bpf_stats():
        blast = measure.build_sender(tmp)
        with Topology(n_spare, blast) as topo:
            usable = usable_backends(topo, wanted, a.interval)
            backends = [b for b in wanted if not usable[b]]
            rows = rows_for(backends, a.iface_counts, a.procs)
            reps = []
            for rep in range(a.reps):
                order = rows[rep % len(rows) :] + rows[: rep % len(rows)]
                figures = {}
                for row in order:
                    figures[row] = measure_row(topo, row, a)
                    print(f"rep {rep + 1}/{a.reps}: {row.label}: done", file=sys.stderr)
                reps.append(figures)
            spare_kind = topo.spare_kind
    summary = summarise(rows, reps)
    goals = targets(summary, a.procs)
    header = [
        f"ovslat bench: kernel {platform.release()}, {measure.os.cpu_count()} CPUs; "
        f"2 x {a.packets} UDP datagrams per row (ns/pkt with bpf_stats on, pps with it "
        f"off), sender on CPU {a.cpu}, {a.reps} rep(s), medians; "
        f"spare interfaces: {spare_kind or 'none'}",
        *(f"backend {b}: unavailable ({why})" for b, why in usable.items() if why),
    ]
    print(report(summary, goals, header))
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"header": header, "rows": summary, "targets": goals, "backends": usable},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
