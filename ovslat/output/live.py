"""The live terminal view: a rich table rebuilt from each Snapshot, and the
whole run's table. With output/progress.py the only rich users. Rendering
never collects; it only reads snapshots."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import tty
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ovslat.model.filters import Filters
from ovslat.model.snapshot import Snapshot

# The seed's guidance for enqueue -> receive: < 10 us healthy, 10-100 us
# moderate load, > 100 us high scheduling delay.
HEALTHY_US, HIGH_US = 10.0, 100.0


def _style(us: float | None) -> str:
    if us is None:
        return "dim"
    if us < HEALTHY_US:
        return "green"
    return "yellow" if us <= HIGH_US else "bold red"


def _us(ns: float | None, stage_style: bool = True) -> Text:
    if ns is None:
        return Text("-", style="dim")
    us = ns / 1000.0
    text = f"{us:.1f}" if us < 1000 else f"{us / 1000:.2f}ms"
    return Text(text, style=_style(us) if stage_style else "")


def _columns(names: tuple[str, ...]) -> Table:
    """A table whose first column (the name) is left-aligned, the figures right."""
    t = Table(expand=True, header_style="bold")
    for i, name in enumerate(names):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    return t


def table(snap: Snapshot, context: dict, uptime_s: float, last_live: dict | None = None) -> Group:
    """last_live: slot -> (InterfaceStats, duration_s) of an interface's last
    interval before it went away, shown in place of its empty ones."""
    cost = snap.cost.ns_per_packet
    header = Text.assemble(
        ("ovslat ", "bold"),
        f"backend {context['backend']}  ",
        f"filters {Filters(**context['filters']).describe()}  ",
        f"interval {snap.duration_s:.1f}s  uptime {uptime_s:.0f}s  ",
        ("probe cost " + (f"{cost:.0f} ns/pkt" if cost else "n/a (bpf_stats off)"), "dim"),
    )
    t = _columns(
        (
            "interface",
            "pps",
            "S1→S2 p50",
            "p99",
            "max µs",
            "S2→S3 p50",
            "p99",
            "cross-CPU",
            "dropped/lost",
            "queue avg/max",
        )
    )
    for st in snap.interfaces:
        duration = snap.duration_s
        label = st.iface.label + (f" ({st.iface.role})" if st.iface.role else "")
        if st.gone:
            label += " gone"
            if last_live and st.iface.slot in last_live:
                st, duration = last_live[st.iface.slot]
        c = st.counters
        e2r, r2i = st.stages["enqueue_to_receive"], st.stages["receive_to_ip"]
        pps = c.enqueued / duration if duration else 0.0
        cross = f"{100.0 * c.cross_cpu / c.received:.0f}%" if c.received else "-"
        qavg = c.queue_depth_avg
        t.add_row(
            Text(label, style="dim" if "gone" in label else ""),
            f"{pps:,.0f}",
            _us(e2r.percentile_ns(0.5)),
            _us(e2r.percentile_ns(0.99)),
            _us(e2r.max_ns if e2r.count else None),
            _us(r2i.percentile_ns(0.5)),
            _us(r2i.percentile_ns(0.99)),
            cross,
            # dropped before S2 (with a kernel reason) / S2 with no S1 record
            Text(
                f"{c.dropped}/{c.flow_lookup_failures}",
                style="yellow" if c.dropped or c.flow_lookup_failures else "",
            ),
            "-" if qavg is None else f"{qavg:.1f}/{c.queue_depth_max}",
        )
    parts: list[RenderableType] = [header, t]
    if snap.hops:
        ht = _columns(("hop", "packets", "transit p50", "p99", "e2e p50", "p99", "e2e max µs"))
        for h in snap.hops:
            ht.add_row(
                f"{h.src.label} → {h.dst.label}",
                f"{h.transit.count:,}",
                _us(h.transit.percentile_ns(0.5)),
                _us(h.transit.percentile_ns(0.99)),
                _us(h.e2e.percentile_ns(0.5)),
                _us(h.e2e.percentile_ns(0.99)),
                _us(h.e2e.max_ns if h.e2e.count else None),
            )
        parts.append(ht)
    if context.get("s3") is None:
        parts.append(Text("S2→S3 not measured on this kernel", style="dim"))
    parts.append(Text("q or Ctrl-C to quit", style="dim"))
    return Group(*parts)


def slow_packets(evs: list) -> Table:
    t = Table(title="latest slow packets", expand=True, header_style="bold")
    for col in ("#", "interface", "latency", "flow", "CPU", "queue", "context", "diagnosis"):
        t.add_column(col, no_wrap=col not in ("diagnosis", "context"))
    for ev in reversed(evs):
        port = lambda p: "" if p is None else f":{p}"  # noqa: E731
        t.add_row(
            str(ev.number),
            ev.interface,
            _us(ev.latency_ns),
            f"{ev.protocol} {ev.src}{port(ev.sport)} → {ev.dst}{port(ev.dport)}",
            f"{ev.enqueue_cpu}→{ev.receive_cpu}",
            "-" if ev.queue_depth is None else str(ev.queue_depth),
            ev.context,
            ev.diagnosis.split(":")[0],
        )
    return t


def print_summary(total: Snapshot, context: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Text(f"Whole run, {total.duration_s:.1f}s", style="bold"))
    for part in table(total, context, total.duration_s).renderables[1:]:
        if isinstance(part, Table):
            console.print(part)


class LiveView:
    """A rich Live display plus a 'q' key listener, restoring the terminal."""

    def __init__(self, stop_event: threading.Event, console: Console | None = None):
        self.console = console or Console()
        self.stop_event = stop_event
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._saved_tty: list[Any] | None = None  # termios attributes
        self._last_live: dict = {}
        self._events: list = []  # latest slow packets, newest last

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        if sys.stdin.isatty():
            fd = sys.stdin.fileno()
            self._saved_tty = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            threading.Thread(target=self._keys, args=(fd,), daemon=True).start()
        return self

    def _keys(self, fd: int) -> None:
        while not self.stop_event.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready and os.read(fd, 1) in (b"q", b"Q"):
                self.stop_event.set()

    def event(self, ev) -> None:
        self._events = (self._events + [ev])[-5:]

    def update(self, snap: Snapshot, context: dict, uptime_s: float) -> None:
        for st in snap.interfaces:
            if not st.gone or st.counters.enqueued or st.counters.flow_lookup_failures:
                self._last_live[st.iface.slot] = (st, snap.duration_s)
        view = table(snap, context, uptime_s, self._last_live)
        if self._events:
            view = Group(*view.renderables[:-1], slow_packets(self._events), view.renderables[-1])
        self._live.update(view, refresh=True)

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)
        if self._saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved_tty)
