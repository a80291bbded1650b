"""The live terminal view: a rich table rebuilt from each Snapshot, and the
whole run's table. With output/progress.py the only rich users. Rendering
never collects; it only reads snapshots.

The view fits the terminal: as many interface rows as the height allows, in
the chosen order (worst p99 first by default), then one line summing the rest;
hops the same, in a bounded share of the height. Every cell is cut with an
ellipsis instead of wrapping, so that a row is always one line."""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import termios
import threading
import tty
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ovslat.model.filters import Filters
from ovslat.model.snapshot import HopStats, InterfaceStats, Snapshot

# The seed's guidance for enqueue -> receive: < 10 us healthy, 10-100 us
# moderate load, > 100 us high scheduling delay.
HEALTHY_US, HIGH_US = 10.0, 100.0

# The orders `s` cycles through, the first the default.
SORT_KEYS = ("p99", "pps", "name", "drops")
# A table's lines besides its rows: top border, header, header rule, bottom border.
TABLE_FRAME_LINES = 4
# Hops get up to a third of the lines the tables share, and at least this many
# (the frame, 3 rows and the summing line) when they have that many.
HOPS_MIN_LINES = TABLE_FRAME_LINES + 3 + 1
IFACE_MIN_WIDTH = 16  # the interface column's, before the figures are cut


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


def _line(*parts: str | tuple[str, str], style: str = "") -> Text:
    """One line of the view, cut at the terminal's width rather than wrapped."""
    return Text.assemble(*parts, style=style, no_wrap=True, overflow="ellipsis")


def _columns(names: tuple[str, ...], min_width: int | None = None) -> Table:
    """A table whose first column (the name) is left-aligned and takes the width
    the figures leave, the figures right; no cell ever wraps. One space between
    a figure and the next border (collapse_padding) leaves the names a third
    more room at 120 columns."""
    t = Table(expand=True, header_style="bold", collapse_padding=True)
    for i, name in enumerate(names):
        t.add_column(
            name,
            justify="left" if i == 0 else "right",
            no_wrap=True,
            overflow="ellipsis",
            ratio=1 if i == 0 else None,
            min_width=min_width if i == 0 else None,
        )
    return t


def _natural(s: str) -> tuple:
    """'ovt-lv2' before 'ovt-lv10'."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


def _worst(*ns: float | None) -> float | None:
    known = [v for v in ns if v is not None]
    return max(known) if known else None


@dataclass(frozen=True)
class Row:
    """An interface as the table shows it: its figures (the last live ones for
    one that is gone) over the interval they cover."""

    stats: InterfaceStats
    duration_s: float
    gone: bool = False

    @property
    def cell(self) -> str:
        i = self.stats.iface
        # a workload names the namespace better than its made-up name does
        text = f"{i.name} {i.workload}" if i.workload else i.label
        text += f" ({i.role})" if i.role else ""
        return text + (" gone" if self.gone else "")

    @property
    def pps(self) -> float:
        c = self.stats.counters
        # a packet received in place (a VM's tap, a netdev bridge's port) has
        # no S1: it is counted once, as received_sync
        return (c.enqueued + c.received_sync) / self.duration_s if self.duration_s else 0.0

    @property
    def p99_ns(self) -> float | None:
        """The worse of the two stages' p99."""
        st = self.stats.stages
        return _worst(
            st["enqueue_to_receive"].percentile_ns(0.99), st["receive_to_ip"].percentile_ns(0.99)
        )

    @property
    def drops(self) -> tuple[int, int]:
        c = self.stats.counters
        return c.dropped, c.flow_lookup_failures


def rows(snap: Snapshot, last_live: dict | None = None) -> list[Row]:
    out = []
    for st in snap.interfaces:
        duration, gone = snap.duration_s, st.gone
        if gone and last_live and st.iface.slot in last_live:
            st, duration = last_live[st.iface.slot]
        out.append(Row(st, duration, gone))
    return out


def sort_rows(rs: list[Row], key: str = "p99") -> list[Row]:
    """p99, pps and drops: the worst first; rows with no latency (no packets)
    after all the others. name: in natural order."""

    def p99(r: Row) -> tuple:
        v = r.p99_ns
        return (v is None, -(v or 0.0))

    def name(r: Row) -> tuple:
        return _natural(r.stats.iface.label)

    keys = {
        "p99": lambda r: (*p99(r), -r.pps, name(r)),
        "pps": lambda r: (-r.pps, *p99(r), name(r)),
        "name": name,
        "drops": lambda r: (-sum(r.drops), -r.drops[0], *p99(r), name(r)),
    }
    if key not in keys:
        raise ValueError(f"unknown sort key {key!r}: one of {', '.join(SORT_KEYS)}")
    return sorted(rs, key=keys[key])


def _fit(n: int, lines: int | None) -> int:
    """How many of n rows a table of `lines` lines shows: all, or as many as
    leave a line for the summing line under it."""
    if lines is None or n + TABLE_FRAME_LINES <= lines:
        return n
    return max(0, min(n, lines - TABLE_FRAME_LINES - 1))


def budget(lines: int | None, n_ifaces: int, n_hops: int) -> tuple[int, int]:
    """(interface rows, hop rows) shown in `lines` lines for both tables (None:
    no limit). Hops take what the interfaces leave, at least a third (or
    HOPS_MIN_LINES) when both need more than there is."""
    if lines is None:
        return n_ifaces, n_hops
    if not n_hops:
        return _fit(n_ifaces, lines), 0
    need_i, need_h = n_ifaces + TABLE_FRAME_LINES, n_hops + TABLE_FRAME_LINES
    if need_i + need_h <= lines:
        return n_ifaces, n_hops
    hop_lines = min(need_h, max(HOPS_MIN_LINES, lines // 3, lines - need_i))
    return _fit(n_ifaces, lines - hop_lines), _fit(n_hops, hop_lines)


def _iface_table(shown: list[Row]) -> Table:
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
        ),
        IFACE_MIN_WIDTH,
    )
    for r in shown:
        c = r.stats.counters
        e2r, r2i = r.stats.stages["enqueue_to_receive"], r.stats.stages["receive_to_ip"]
        cross = f"{100.0 * c.cross_cpu / c.received:.0f}%" if c.received else "-"
        qavg = c.queue_depth_avg
        t.add_row(
            Text(r.cell, style="dim" if r.gone else ""),
            f"{r.pps:,.0f}",
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
    return t


def _fmt_us(ns: float | None) -> str:
    return "-" if ns is None else f"{_us(ns).plain} µs"


def more_interfaces(hidden: list[Row]) -> Text:
    """The one line standing for the rows that do not fit."""
    worst = _worst(*(r.p99_ns for r in hidden))
    dropped, lost = (sum(r.drops[i] for r in hidden) for i in (0, 1))
    return _line(
        f"… {len(hidden):,} more interfaces: {sum(r.pps for r in hidden):,.0f} pps, "
        f"worst p99 {_fmt_us(worst)}, dropped/lost {dropped:,}/{lost:,}",
        style="dim",
    )


def sort_hops(hops: tuple[HopStats, ...]) -> list[HopStats]:
    return sorted(hops, key=lambda h: (_natural(h.src.label), _natural(h.dst.label), h.tunnel))


def _hop_table(shown: list[HopStats]) -> Table:
    ht = _columns(("hop", "packets", "transit p50", "p99", "e2e p50", "p99", "e2e max µs"))
    src = None
    for h in shown:
        # the source once per group: its next hops only name where they go
        name = f"  → {h.dst.label}" if h.src == src else f"{h.src.label} → {h.dst.label}"
        if h.tunnel:
            name += f" ({h.tunnel_label})"
        src = h.src
        ht.add_row(
            name,
            f"{h.transit.count:,}",
            _us(h.transit.percentile_ns(0.5)),
            _us(h.transit.percentile_ns(0.99)),
            _us(h.e2e.percentile_ns(0.5)),
            _us(h.e2e.percentile_ns(0.99)),
            _us(h.e2e.max_ns if h.e2e.count else None),
        )
    return ht


def more_hops(hidden: list[HopStats]) -> Text:
    transit = _worst(*(h.transit.percentile_ns(0.99) for h in hidden))
    e2e = _worst(*(h.e2e.percentile_ns(0.99) for h in hidden))
    return _line(
        f"… {len(hidden):,} more hops: {sum(h.transit.count for h in hidden):,} packets, "
        f"worst transit p99 {_fmt_us(transit)}, worst e2e p99 {_fmt_us(e2e)}",
        style="dim",
    )


def _next_sort(key: str) -> str:
    return SORT_KEYS[(SORT_KEYS.index(key) + 1) % len(SORT_KEYS)]


def table(
    snap: Snapshot,
    context: dict,
    uptime_s: float,
    last_live: dict | None = None,
    *,
    sort: str = "p99",
    height: int | None = None,
    events: list | tuple = (),
) -> Group:
    """The whole view. last_live: slot -> (InterfaceStats, duration_s) of an
    interface's last interval before it went away, shown in place of its empty
    ones. height: the lines the view may take (None: every row). events: the
    latest slow packets, newest last."""
    cost = snap.cost.ns_per_packet
    header = _line(
        ("ovslat ", "bold"),
        f"backend {context['backend']}  ",
        (f"sort {sort}  ", "bold"),  # before the filters, which can be long
        f"filters {Filters.from_dict(context['filters']).describe()}  ",
        f"interval {snap.duration_s:.1f}s  uptime {uptime_s:.0f}s  ",
        ("probe cost " + (f"{cost:.0f} ns/pkt" if cost else "n/a (bpf_stats off)"), "dim"),
    )
    notes: list[RenderableType] = []
    if events:
        notes.append(slow_packets(list(events)))
    if context.get("s3") is None:
        notes.append(_line("S2→S3 not measured on this kernel", style="dim"))
    notes.append(_line(f"q or Ctrl-C to quit, s to sort by {_next_sort(sort)}", style="dim"))

    ordered = sort_rows(rows(snap, last_live), sort)
    hops = sort_hops(snap.hops)
    lines = None
    if height is not None:
        fixed = 1 + sum(1 for n in notes if isinstance(n, Text))
        fixed += slow_packets_lines(len(events)) if events else 0
        lines = max(0, height - fixed)
    n_ifaces, n_hops = budget(lines, len(ordered), len(hops))

    parts: list[RenderableType] = [header, _iface_table(ordered[:n_ifaces])]
    if n_ifaces < len(ordered):
        parts.append(more_interfaces(ordered[n_ifaces:]))
    if hops:
        parts.append(_hop_table(hops[:n_hops]))
        if n_hops < len(hops):
            parts.append(more_hops(hops[n_hops:]))
    return Group(*parts, *notes)


def slow_packets_lines(n: int) -> int:
    """The lines slow_packets() takes for n events: its title, the frame, a row each."""
    return 1 + TABLE_FRAME_LINES + n


def slow_packets(evs: list) -> Table:
    t = Table(title="latest slow packets", expand=True, header_style="bold", collapse_padding=True)
    # the flow, the context and the diagnosis share what the short columns leave
    ratios = {"flow": 3, "context": 2, "diagnosis": 2}
    for col in ("#", "interface", "latency", "flow", "CPU", "queue", "context", "diagnosis"):
        t.add_column(col, no_wrap=True, overflow="ellipsis", ratio=ratios.get(col))
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
    """The whole run's tables: every row (no height limit), worst p99 first."""
    console = console or Console()
    console.print(Text(f"Whole run, {total.duration_s:.1f}s", style="bold"))
    for part in table(total, context, total.duration_s).renderables[1:]:
        if isinstance(part, Table):
            console.print(part)


class LiveView:
    """A rich Live display sized to the terminal, plus a key listener ('q'
    quits, 's' changes the order), restoring the terminal."""

    def __init__(self, stop_event: threading.Event, console: Console | None = None):
        self.console = console or Console()
        self.stop_event = stop_event
        self.sort = SORT_KEYS[0]
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._saved_tty: list[Any] | None = None  # termios attributes
        self._last_live: dict = {}
        self._events: list = []  # latest slow packets, newest last
        self._shown: tuple[Snapshot, dict, float] | None = None  # what update() was given
        self._lock = threading.Lock()  # update() and the key thread both render

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
            if ready:
                key = os.read(fd, 1)
                if not key:  # the terminal went away
                    return
                self.key(key)

    def key(self, key: bytes) -> None:
        if key in (b"q", b"Q"):
            self.stop_event.set()
        elif key in (b"s", b"S"):
            with self._lock:
                self.sort = _next_sort(self.sort)
            self._refresh()  # now, not at the next interval

    def event(self, ev) -> None:
        self._events = (self._events + [ev])[-5:]

    def update(self, snap: Snapshot, context: dict, uptime_s: float) -> None:
        with self._lock:
            for st in snap.interfaces:
                c = st.counters
                if not st.gone or c.enqueued or c.received_sync or c.flow_lookup_failures:
                    self._last_live[st.iface.slot] = (st, snap.duration_s)
            self._shown = (snap, context, uptime_s)
        self._refresh()

    def renderable(self) -> RenderableType | None:
        """The view of the latest snapshot, in the current order, fitted to
        the console's size now (the terminal may have been resized)."""
        with self._lock:
            if self._shown is None:
                return None
            snap, context, uptime_s = self._shown
            return table(
                snap,
                context,
                uptime_s,
                self._last_live,
                sort=self.sort,
                height=self.console.size.height,
                events=list(self._events),
            )

    def _refresh(self) -> None:
        view = self.renderable()
        if view is not None:
            self._live.update(view, refresh=True)

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)
        if self._saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved_tty)
