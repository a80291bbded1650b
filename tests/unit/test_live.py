"""The live table rendered to a recording console: what a person reads, on
one interface and on a node's worth of them (250 in 120x40)."""

import dataclasses
import io
import os
import re
import threading

import pytest
from rich.cells import cell_len
from rich.console import Console

from ovslat.model.histogram import Histogram
from ovslat.model.snapshot import Counters, HopStats, Interface, InterfaceStats, Snapshot
from ovslat.output.live import LiveView, budget, print_summary, table
from tests.unit.test_events import event
from tests.unit.test_render import hist, snapshot

CONTEXT = {
    "backend": "tracepoint",
    "s3": "x",
    "filters": {
        "src_ip": None,
        "dst_ip": None,
        "src_port": None,
        "dst_port": 53,
        "protocol": "udp",
    },
}
WIDTH, HEIGHT = 120, 40
MORE = re.compile(
    r"… ([\d,]+) more interfaces: ([\d,]+) pps, worst p99 (\S+)(?: µs)?, "
    r"dropped/lost ([\d,]+)/([\d,]+)"
)


def render(snap, last_live=None) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(table(snap, CONTEXT, 12.0, last_live))
    return console.export_text()


def render_view(view, width=WIDTH, height=HEIGHT) -> str:
    """What the terminal shows: a renderable printed at the terminal's size."""
    console = Console(
        record=True, width=width, height=height, color_system=None, file=io.StringIO()
    )
    console.print(view)
    return console.export_text()


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip()[1:-1].split("│")]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first table (the interfaces)."""
    body = text.split("┩", 1)[1].split("└", 1)[0]
    return [cells(line) for line in body.splitlines() if line.startswith("│")]


def test_rows_header_and_values():
    text = render(snapshot())
    assert "backend tracepoint" in text and "filters dst-port=53 protocol=udp" in text
    assert "uptime 12s" in text and "probe cost 1000 ns/pkt" in text
    (row,) = (line for line in text.splitlines() if "veth0" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    # 4 packets in 2 s; 1 of 4 received on another CPU; queue 6/4 = 1.5, max 3
    assert cells[:2] == ["veth0", "2"]
    assert cells[7:] == ["25%", "0/2", "1.5/3"]
    assert cells[4] == "9.0"  # exact max, us


def test_gone_interface_keeps_its_last_figures():
    snap = snapshot()
    live = snap.interfaces[0]
    gone = dataclasses.replace(
        live,
        gone=True,
        counters=dataclasses.replace(
            live.counters, enqueued=0, received=0, cross_cpu=0, flow_lookup_failures=0
        ),
    )
    later = dataclasses.replace(snap, interfaces=(gone,))
    text = render(later, {0: (live, 2.0)})
    (row,) = (line for line in text.splitlines() if "veth0" in line)
    assert "veth0 gone" in row and "25%" in row


def test_received_in_place_counts_in_pps_not_in_cross_cpu():
    """A VM tap's packets: S2 with no backlog, so no S1 -> S2, but S2 -> S3."""
    st = InterfaceStats(
        Interface("tap0", 3, 1, slot=0, role="vm", workload="3f2a-uuid"),
        Counters(received_sync=10, ip_rcv=10),
        {"enqueue_to_receive": Histogram.empty(), "receive_to_ip": hist([700] * 10)},
    )
    text = render(Snapshot(0.0, 2.0, "tracepoint", (st,)))
    (row,) = (cells(line) for line in text.splitlines() if "tap0" in line)
    assert row[0] == "tap0 3f2a-uuid (vm)"
    assert row[1] == "5"  # 10 packets in 2 s
    assert row[2:5] == ["-", "-", "-"] and row[5] != "-"  # S1->S2 none, S2->S3 measured
    assert row[7] == "-"  # cross-CPU: of the S1 -> S2 packets only


# ---- a node's worth of interfaces -------------------------------------------


def node(n: int = 250, duration_s: float = 2.0) -> Snapshot:
    """n interfaces: most with one latency each (a permutation, so every p99
    differs), every tenth idle, every tenth received in place only."""
    out = []
    for i in range(n):
        v = 2_000 + (i * 7919 % n) * 1_500  # ns
        packets = 2 * (i % 13 + 1)
        counters = Counters(
            enqueued=packets,
            received=packets,
            cross_cpu=i % 3,
            dropped=i % 4,
            flow_lookup_failures=i % 3,
        )
        stages = {"enqueue_to_receive": hist([v] * packets), "receive_to_ip": hist([300])}
        if i % 10 == 3:  # idle
            counters = Counters()
            stages = {s: Histogram.empty() for s in stages}
        elif i % 10 == 5:  # received in place: no S1, S2 -> S3 only
            counters = Counters(received_sync=packets, ip_rcv=packets)
            stages = {"enqueue_to_receive": Histogram.empty(), "receive_to_ip": hist([v])}
        iface = Interface(f"ovt-lv{i}", 100 + i, 1, slot=i, role="pod", workload=f"w/p{i}")
        out.append(InterfaceStats(iface, counters, stages))
    return Snapshot(0.0, duration_s, "tracepoint", tuple(out))


def p99(st: InterfaceStats) -> float | None:
    known = [h.percentile_ns(0.99) for h in st.stages.values() if h.count]
    return max(known) if known else None


def pps(st: InterfaceStats, duration_s: float) -> float:
    return (st.counters.enqueued + st.counters.received_sync) / duration_s


def names(rows: list[list[str]]) -> list[str]:
    return [r[0].split()[0] for r in rows]


def test_250_interfaces_fit_120x40_worst_p99_first():
    snap = node()
    text = render_view(table(snap, CONTEXT, 3.0, height=HEIGHT))
    lines = text.splitlines()
    assert len(lines) == HEIGHT  # all of it, and no more
    assert max(cell_len(line) for line in lines) <= WIDTH
    # every line of the tables is one whole row: border to border
    for line in lines:
        if line[0] in "┏┃┡│└":
            assert line[-1] in "┓┃┩│┘" and cell_len(line) == WIDTH, line
    rows = table_rows(text)
    expected = sorted(
        (st for st in snap.interfaces if p99(st) is not None), key=lambda st: -p99(st)
    )
    assert len({p99(st) for st in expected}) == len(expected)  # an unambiguous order
    assert names(rows) == [st.iface.name for st in expected[: len(rows)]]
    assert len(rows) == HEIGHT - 1 - 4 - 1 - 1  # header, frame, summing line, footer
    # the figures shown go down (p99 is the worse of the two stages')
    worst = [
        max(float(r[3]) if r[3] != "-" else 0, float(r[6]) if r[6] != "-" else 0) for r in rows
    ]
    assert worst == sorted(worst, reverse=True)
    assert "sort p99" in lines[0]


def test_summing_line_is_the_hidden_rows():
    snap = node()
    text = render_view(table(snap, CONTEXT, 3.0, height=HEIGHT))
    shown = set(names(table_rows(text)))
    hidden = [st for st in snap.interfaces if st.iface.name not in shown]
    (m,) = (MORE.search(line) for line in text.splitlines() if line.startswith("… "))
    assert m, text
    count, rate, worst, dropped, lost = m.groups()
    assert int(count.replace(",", "")) == len(hidden) == 250 - len(shown)
    assert rate == f"{sum(pps(st, snap.duration_s) for st in hidden):,.0f}"
    assert float(worst) == round(max(p99(st) for st in hidden if p99(st)) / 1000, 1)
    assert int(dropped) == sum(st.counters.dropped for st in hidden)
    assert int(lost) == sum(st.counters.flow_lookup_failures for st in hidden)


def test_idle_interfaces_come_last_and_print_summary_has_every_row():
    snap = node(40)
    console = Console(record=True, width=WIDTH, color_system=None, file=io.StringIO())
    print_summary(snap, CONTEXT, console)
    text = console.export_text()
    rows = table_rows(text)
    assert len(rows) == 40 and "more interfaces" not in text  # no height limit
    idle = [f"ovt-lv{i}" for i in range(40) if i % 10 == 3]
    assert names(rows)[-len(idle) :] == idle
    assert all(r[1] == "0" for r in rows[-len(idle) :])


def test_workload_names_are_cut_never_wrapped():
    snap = node(60)
    long = InterfaceStats(
        Interface("eth0", 2, 1, slot=99, role="pod", workload="web/nginx-1"),
        Counters(enqueued=10, received=10),
        {"enqueue_to_receive": hist([900_000] * 10), "receive_to_ip": hist([300])},
    )
    longer = dataclasses.replace(
        long,
        iface=dataclasses.replace(
            long.iface,
            name="veth3a1b2c4d",
            netns="cni-1234",
            slot=98,
            workload="kube-system/coredns-5d8f7b9c4-x2x7k",
        ),
    )
    snap = dataclasses.replace(snap, interfaces=(*snap.interfaces, long, longer))
    text = render_view(table(snap, CONTEXT, 3.0, height=HEIGHT))
    first, second = table_rows(text)[:2]
    assert {first[0], second[0]} >= {"eth0 web/nginx-1 (pod)"}
    cut = second[0] if first[0].startswith("eth0") else first[0]
    # the workload stands for the namespace (cni-1234), which is left out
    assert cut.startswith("veth3a1b2c4d kube-system/") and cut.endswith("…")
    assert "w/p" in text  # the synthetic pods' names too
    assert max(cell_len(line) for line in text.splitlines()) <= WIDTH


def keyed_view() -> tuple[LiveView, threading.Event]:
    stop = threading.Event()
    console = Console(width=WIDTH, height=HEIGHT, color_system=None, file=io.StringIO())
    return LiveView(stop, console), stop


def test_s_cycles_the_order_and_q_quits():
    """Keys go through the view's own key thread, from a pipe."""
    snap = node()
    view, stop = keyed_view()
    view.update(snap, CONTEXT, 3.0)
    by_p99 = names(table_rows(render_view(view.renderable())))
    r, w = os.pipe()
    keys = threading.Thread(target=view._keys, args=(r,), daemon=True)
    keys.start()
    seen = {}
    try:
        for want in ("pps", "name", "drops", "p99"):
            os.write(w, b"s")
            deadline = threading.Event()
            for _ in range(100):
                if view.sort == want:
                    break
                deadline.wait(0.02)
            assert view.sort == want
            text = render_view(view.renderable())
            assert f"sort {want}" in text.splitlines()[0]
            seen[want] = table_rows(text)
        os.write(w, b"q")
        keys.join(timeout=2)
        assert stop.is_set() and not keys.is_alive()
    finally:
        os.close(r)
        os.close(w)
    by_name = {st.iface.name: st for st in snap.interfaces}
    rate = [pps(by_name[n], 2.0) for n in names(seen["pps"])]
    assert rate == sorted(rate, reverse=True) and rate[0] > rate[-1]
    assert names(seen["name"]) == [f"ovt-lv{i}" for i in range(len(seen["name"]))]
    drops = [
        by_name[n].counters.dropped + by_name[n].counters.flow_lookup_failures
        for n in names(seen["drops"])
    ]
    assert drops == sorted(drops, reverse=True) and drops[0] == 3 + 2
    assert names(seen["p99"]) == by_p99
    assert len({tuple(names(rows)) for rows in seen.values()}) == 4  # four orders


def test_hops_grouped_and_bounded():
    snap = node()
    ifs = [st.iface for st in snap.interfaces]
    # sources 7 and 2, each to several destinations, in no particular order
    pairs = [(7, 40), (2, 11), (7, 9), (2, 30), (2, 12)] + [(100 + k, 200 + k) for k in range(30)]
    hops = tuple(
        HopStats(ifs[a], ifs[b], hist([20_000 + a] * (a + 1)), hist([40_000 + b])) for a, b in pairs
    )
    snap = dataclasses.replace(snap, hops=hops)
    text = render_view(table(snap, CONTEXT, 3.0, height=HEIGHT))
    lines = text.splitlines()
    assert len(lines) <= HEIGHT and max(cell_len(line) for line in lines) <= WIDTH
    hop_body = text.split("┃ hop", 1)[1].split("┩", 1)[1].split("└", 1)[0]
    hop_rows = [cells(line)[0] for line in hop_body.splitlines() if line.startswith("│")]
    assert hop_rows[:5] == [
        "ovt-lv2 → ovt-lv11",
        "→ ovt-lv12",
        "→ ovt-lv30",
        "ovt-lv7 → ovt-lv9",
        "→ ovt-lv40",
    ]
    # a bounded share: about a third of the lines, the interfaces keep the rest
    assert 3 <= len(hop_rows) <= HEIGHT // 3
    assert len(table_rows(text)) > len(hop_rows)
    (more,) = (line for line in lines if "more hops" in line)
    hidden = sorted(pairs)[len(hop_rows) :]
    assert more.startswith(f"… {len(hidden)} more hops: {sum(a + 1 for a, _ in hidden):,} packets")


def test_slow_packets_and_notes_fit_too():
    snap = node()
    ev = event(
        wall_s=0.0,
        interface="ovt-lv7",
        receive_cpu=3,
        task="a-task-with-a-name-long-enough-to-need-cutting" * 2,
        stack=("__netif_receive_skb+0x1", "process_backlog+0xa5", "__irq_exit_rcu+0x4a"),
    )
    context = {**CONTEXT, "s3": None}
    view, _ = keyed_view()
    for k in range(5):
        view.event(dataclasses.replace(ev, number=k + 1))
    view.update(snap, context, 3.0)
    text = render_view(view.renderable())
    lines = text.splitlines()
    assert len(lines) == HEIGHT and max(cell_len(line) for line in lines) <= WIDTH
    assert "latest slow packets" in text and "S2→S3 not measured" in text
    assert lines[-1].startswith("q or Ctrl-C to quit, s to sort by pps")


@pytest.mark.parametrize(
    "lines, ifaces, hops, expected",
    [
        (None, 250, 40, (250, 40)),  # the whole run: everything
        (38, 10, 0, (10, 0)),
        (38, 34, 0, (34, 0)),  # exactly fits: no summing line
        (38, 35, 0, (33, 0)),  # one too many: two rows make room for the sum
        (38, 10, 5, (10, 5)),
        (38, 250, 2, (27, 2)),  # hops take only what they need
        (38, 250, 40, (21, 7)),  # a third for hops: 12 lines, 7 rows + sum
        (38, 2, 40, (2, 27)),  # hops take what the interfaces leave
        (12, 250, 40, (0, 3)),  # a tiny terminal: a few hops still
    ],
)
def test_budget(lines, ifaces, hops, expected):
    assert budget(lines, ifaces, hops) == expected


def test_a_tunnels_hops_are_named():
    from ovslat.abi import TUNNEL_TYPE_SHIFT, TunnelType

    snap = node()
    a, b = snap.interfaces[1].iface, snap.interfaces[2].iface
    hops = tuple(
        HopStats(a, b, hist([20_000]), hist([40_000]), kind << TUNNEL_TYPE_SHIFT | vni)
        for kind, vni in ((TunnelType.VXLAN, 100), (TunnelType.GENEVE, 7))
    )
    text = render_view(table(dataclasses.replace(snap, hops=hops), CONTEXT, 3.0, height=HEIGHT))
    hop_body = text.split("┃ hop", 1)[1].split("┩", 1)[1].split("└", 1)[0]
    hop_rows = [cells(line)[0] for line in hop_body.splitlines() if line.startswith("│")]
    assert hop_rows == [
        f"{a.label} → {b.label} (vxlan vni 100)",
        f"→ {b.label} (geneve vni 7)",
    ]
