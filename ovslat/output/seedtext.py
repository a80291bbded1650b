"""The seed tools' own text, line for line, as their code prints it
(everoute/troubleshooting-tools, PR #25: enqueue_to_iprec_latency_summary.py
and enqueue_to_iprec_latency_threshold.py): banners, interval and cumulative
reports, debug statistics, event blocks, the threshold tool's summary and the
lines a run ends with. Where the seed's guide and its code differ, this
follows the code (README lists the differences).

Every function returns the lines one `print()` each of the seed would write,
"" for an empty line. ovslat's additions (percentiles, drops, in flight,
backend, diagnosis) appear only with `extended`: without it a script that
parses the seed's output reads exactly the lines it expects. Pure.
"""

from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass

from ovslat.abi import DebugCounter
from ovslat.model.events import PROTOCOL_NAMES, SlowEvent
from ovslat.model.histogram import Histogram
from ovslat.model.snapshot import DEBUG_POINTS, Counters, InterfaceStats
from ovslat.output.text import cpu_and_timing, histogram_rows

RULE = "=" * 80
THIN = "-" * 80
CRITICAL = "^^^ CRITICAL ASYNC BOUNDARY (enqueue → receive) ^^^"
SUMMARY_TITLE = "Focused RX Latency Measurement: enqueue_to_backlog → ip_rcv"
THRESHOLD_TITLE = "Threshold-Based RX Latency Analysis"
# (ovslat stage, the seed's names of its two ends)
PAIRS = (
    ("enqueue_to_receive", DEBUG_POINTS[0], DEBUG_POINTS[1]),
    ("receive_to_ip", DEBUG_POINTS[1], DEBUG_POINTS[2]),
)
# The seed's debug code points, in its order (by code number), and how each
# is read from ovslat's counters of one probe point (d: DebugCounter -> count).
_D = DebugCounter
SEED_DEBUG = (
    ("PROBE_ENTRY", lambda d: d[_D.PROBE_ENTRY]),
    ("HANDLE_ENTRY", lambda d: d[_D.HANDLE_ENTRY]),
    ("PARSE_ENTRY", lambda d: d[_D.PARSE_ENTRY]),
    # the seed's parse applies the filters, so its success means "matched"
    (
        "PARSE_SUCCESS",
        lambda d: d[_D.PARSE_SUCCESS] - d[_D.IP_FILTER] - d[_D.PROTO_FILTER] - d[_D.PORT_FILTER],
    ),
    ("IP_FILTER", lambda d: d[_D.IP_FILTER]),
    ("PROTO_FILTER", lambda d: d[_D.PROTO_FILTER]),
    ("PORT_FILTER", lambda d: d[_D.PORT_FILTER]),
    ("FLOW_CREATE", lambda d: d[_D.FLOW_CREATE]),
    ("FLOW_LOOKUP", lambda d: d[_D.FLOW_LOOKUP]),
    ("FLOW_FOUND", lambda d: d[_D.FLOW_FOUND]),
    ("FLOW_NOT_FOUND", lambda d: d[_D.FLOW_LOOKUP] - d[_D.FLOW_FOUND]),
    ("LATENCY_SUBMIT", lambda d: d[_D.LATENCY_SUBMIT]),
)
# What each backend hooks, in the seed's "attached" list (kprobe: its words).
HOOK_NAMES = {
    "kprobe": (
        "kprobe__enqueue_to_backlog",
        "kprobe____netif_receive_skb",
        "kprobe__ip_rcv",
    ),
    "fentry": ("fentry/enqueue_to_backlog", "fentry/__netif_receive_skb", "fentry/ip_rcv"),
    "tracepoint": (
        "raw_tracepoint/netif_rx + netif_receive_skb_entry/exit (enqueue_to_backlog)",
        "raw_tracepoint/netif_receive_skb (__netif_receive_skb)",
        "netfilter/ipv4 PRE_ROUTING (ip_rcv)",
    ),
}


@dataclass(frozen=True)
class Settings:
    """A seed tool's arguments as its banner shows them."""

    interface: str
    ifindex: int
    protocol: str = "all"
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int = 0
    dst_port: int = 0
    interval_s: float = 5
    duration_s: float = 0  # 0: until Ctrl-C
    threshold_us: float = 0  # summary tool: 0 = event tracking off
    debug: bool = False


def _n(v: float) -> str:
    """The seed prints its integer arguments with %d; ovslat also takes fractions."""
    return f"{v:g}"


def _filter_lines(s: Settings) -> list[str]:
    lines = [f"Protocol filter: {s.protocol.upper()}"]
    if s.src_ip:
        lines.append(f"Source IP: {s.src_ip}")
    if s.dst_ip:
        lines.append(f"Destination IP: {s.dst_ip}")
    if s.src_port:
        lines.append(f"Source port: {s.src_port}")
    if s.dst_port:
        lines.append(f"Destination port: {s.dst_port}")
    return lines


def summary_banner(s: Settings) -> list[str]:
    lines = [RULE, SUMMARY_TITLE, RULE, f"Target interface: {s.interface} (ifindex {s.ifindex})"]
    lines += _filter_lines(s)
    lines.append(f"Statistics interval: {_n(s.interval_s)} seconds")
    lines.append(
        f"Total duration: {_n(s.duration_s)} seconds"
        if s.duration_s > 0
        else "Total duration: Unlimited (run until Ctrl-C)"
    )
    if s.threshold_us:
        lines.append(
            f"High-latency event tracking: ENABLED (threshold: {_n(s.threshold_us)} us = "
            f"{s.threshold_us / 1000.0:.3f} ms)"
        )
    else:
        lines.append("High-latency event tracking: DISABLED (only histogram summary)")
    if s.debug:
        lines.append("Debug mode: ENABLED")
    return lines + [
        "",
        "Measuring 3 critical stages:",
        "  1. enqueue_to_backlog  - Queue insertion",
        "  2. __netif_receive_skb - Softirq processing (ASYNC BOUNDARY)",
        "  3. ip_rcv              - IP layer entry",
        RULE,
    ]


def summary_attached(backend: str, s3: bool, interval_s: float) -> list[str]:
    hooks = HOOK_NAMES[backend][: 3 if s3 else 2]
    head = (
        "All 3 kprobes attached:"
        if backend == "kprobe" and s3
        else f"All {len(hooks)} probes attached ({backend} backend):"
    )
    lines = ["", "BPF program loaded successfully", head, *(f"  - {h}" for h in hooks)]
    if not s3:
        lines.append("  (ip_rcv: none on this kernel with this backend; IP layer packets stay 0)")
    return lines + [
        "",
        "Collecting latency data... Hit Ctrl-C to end.",
        f"Statistics will be displayed every {_n(interval_s)} seconds",
        "",
    ]


def _stamp(wall_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_s))


def _percentiles(h: Histogram) -> str:
    p50, p99 = h.percentile_ns(0.5) or 0.0, h.percentile_ns(0.99) or 0.0
    return f"    p50 {p50 / 1000:.1f}us  p99 {p99 / 1000:.1f}us  max {h.max_ns / 1000:.1f}us"


def _measurements(st: InterfaceStats | None, extended: bool) -> list[str]:
    lines: list[str] = []
    for stage, a, b in PAIRS:
        h = st.stages[stage] if st else None
        if not h or not h.count:
            continue  # the seed prints only the stage pairs it has samples of
        lines += [
            "",
            f"  {a} -> {b}:",
            f"    Total samples: {h.count}",
            "    Latency distribution:",
        ]
        lines += histogram_rows(h)
        if stage == "enqueue_to_receive":
            lines.append(f"    {CRITICAL}")
        if extended:
            lines.append(_percentiles(h))
    return lines


def _counters(st: InterfaceStats, extended: bool) -> list[str]:
    c = st.counters
    lines = [
        f"  Enqueued packets:        {c.enqueued}",
        f"  Received packets:        {c.received}",
        f"  IP layer packets:        {c.ip_rcv}",
        f"  Cross-CPU migrations:    {c.cross_cpu}",
        f"  Parse failures:          {c.parse_failures}",
        # the seed's meaning: an S2 with no S1 record, synchronous receives included
        f"  Flow lookup failures:    {c.flow_lookup_failures + c.received_sync}",
    ]
    if extended:
        drops = ", ".join(f"{r}: {n}" for r, n in st.drops)
        lines += [
            f"  Dropped before receive:  {c.dropped}" + (f" ({drops})" if drops else ""),
            f"  In flight:               {c.in_flight}  "
            "(enqueued = received + dropped + in flight)",
            f"  Synchronous receives:    {c.received_sync}  (of the flow lookup failures)",
        ]
    return lines


def _queue(st: InterfaceStats, title: str, extended: bool) -> list[str]:
    c = st.counters
    if not c.queue_depth_samples:
        return []  # the seed prints this block only once it has a sample
    lines = [
        "",
        title,
        f"  Average queue depth: {c.queue_depth_sum / c.queue_depth_samples:.2f} packets",
        f"  Total enqueue operations: {c.enqueued}",
    ]
    if extended:
        lines.append(f"  Max queue depth: {c.queue_depth_max} packets")
    return lines


def seed_debug(point_counts: list[int], probe_entries: int) -> list[tuple[str, int]]:
    """One probe point's counters by the seed's code points, non-zero only."""
    d = dict(zip(DebugCounter, point_counts, strict=True))
    d[DebugCounter.PROBE_ENTRY] = probe_entries
    return [(name, v) for name, get in SEED_DEBUG if (v := get(d))]


def debug_block(st: InterfaceStats | None, probe_entries: tuple[int, ...]) -> list[str]:
    """DEBUG STATISTICS; the seed never resets them, so neither does this:
    pass the run so far."""
    lines = ["", RULE, "DEBUG STATISTICS (Stage Execution Flow)", RULE]
    for p, point in enumerate(DEBUG_POINTS):
        counts = list(st.debug[p]) if st and st.debug else [0] * len(DebugCounter)
        rows = seed_debug(counts, probe_entries[p] if probe_entries else 0)
        if rows:
            lines += ["", f"{point}:", *(f"  {name:<25}: {v}" for name, v in rows)]
    return lines


def interval_report(
    st: InterfaceStats | None,
    end_wall_s: float,
    duration_s: float,
    debug_so_far: tuple[InterfaceStats | None, tuple[int, ...]] | None = None,
    events: int | None = None,
    extended: bool = False,
) -> list[str]:
    """One interval: its histograms and counters (the seed's "Interval" counters
    are its running totals; these are the interval's, as the title says).
    events: the high-latency events of the interval (--threshold), else None."""
    lines = [
        "",
        RULE,
        f"[{_stamp(end_wall_s)}] Enqueue → IP_RCV Latency Report (Interval: {duration_s:.1f}s)",
        RULE,
    ]
    measured = _measurements(st, extended)
    if not measured or st is None:
        lines.append("No latency data collected in this interval")
        if debug_so_far is not None:
            lines += debug_block(*debug_so_far)
        return lines
    lines += ["", "Latency Measurements:", THIN, *measured]
    lines += ["", RULE, "Packet Counters (Interval):", *_counters(st, extended)]
    lines += _queue(st, "Backlog Queue Statistics:", extended)
    if debug_so_far is not None:
        lines += debug_block(*debug_so_far)
    if events is not None:
        lines += ["", f"High Latency Events: {events}", RULE]
    return lines


def cumulative_report(
    st: InterfaceStats | None,
    end_wall_s: float,
    duration_s: float,
    events: int | None = None,
    extended: bool = False,
) -> list[str]:
    """The whole run, final interval included (the seed leaves its last,
    partial interval out of its cumulative figures)."""
    lines = [
        "",
        RULE,
        f"[{_stamp(end_wall_s)}] CUMULATIVE Enqueue → IP_RCV Latency Report "
        f"(Total Duration: {duration_s:.1f}s)",
        RULE,
    ]
    measured = _measurements(st, extended)
    if not measured or st is None:
        return lines + ["No cumulative latency data collected"]
    lines += ["", "Latency Measurements (Cumulative):", THIN, *measured]
    lines += ["", RULE, "Packet Counters (Cumulative):", *_counters(st, extended)]
    lines += _queue(st, "Backlog Queue Statistics (Cumulative):", extended)
    if events is not None:
        lines += ["", f"Total High Latency Events: {events}"]
    return lines + [RULE]


def _whole_us(ev: SlowEvent) -> int:
    """The seed's events carry latency in whole microseconds."""
    return ev.latency_ns // 1000


def _stamp_us(wall_s: float) -> str:
    frac = math.modf(wall_s)[0]
    return f"{_stamp(wall_s)}.{int(frac * 1e6):06d}"


_PROTOCOL_NUMBERS = {name: num for num, name in PROTOCOL_NAMES.items()}


def _protocol_number(ev: SlowEvent) -> int:
    return _PROTOCOL_NUMBERS.get(ev.protocol) or int(ev.protocol)


def _event_head(ev: SlowEvent) -> list[str]:
    """Both tools' HIGH LATENCY EVENT heading, up to the latency line."""
    return [
        "",
        RULE,
        f"HIGH LATENCY EVENT #{ev.number}",
        RULE,
        f"Timestamp: {_stamp_us(ev.wall_s)}",
        "",
    ]


def summary_event(ev: SlowEvent) -> list[str]:
    """The summary tool's HIGH LATENCY EVENT (--threshold): a stage pair, CPUs, packet."""
    a, b = next((a, b) for stage, a, b in PAIRS if stage == ev.stage)
    us = _whole_us(ev)
    lines = [
        *_event_head(ev),
        f"Latency: {us:.3f} us ({us / 1000.0:.6f} ms)",
        "",
        "Stage Transition:",
        f"  {a} -> {b}",
    ]
    if ev.stage == "enqueue_to_receive":
        lines.append(f"  {CRITICAL}")
    lines += [
        "",
        "CPU Information:",
        f"  Start CPU: {ev.enqueue_cpu}",
        f"  End CPU: {ev.receive_cpu}",
    ]
    if ev.cross_cpu:
        lines.append("  ^^^ CPU MIGRATION DETECTED ^^^")
    lines += ["", "Packet Information:", f"  Source IP: {ev.src}", f"  Dest IP: {ev.dst}"]
    proto = _protocol_number(ev)
    if proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        lines += [
            f"  Protocol: {ev.protocol}",
            f"  Source Port: {ev.sport}",
            f"  Dest Port: {ev.dport}",
        ]
    else:
        lines.append(f"  Protocol: {proto}")
    return lines + [RULE]


def threshold_banner(s: Settings) -> list[str]:
    return [
        RULE,
        THRESHOLD_TITLE,
        RULE,
        f"Target interface: {s.interface} (ifindex {s.ifindex})",
        f"Latency threshold: {s.threshold_us / 1000.0:.3f} ms ({_n(s.threshold_us)} us)",
        *_filter_lines(s),
        "",
        "Measurement points:",
        "  1. enqueue_to_backlog  - Queue insertion",
        "  2. __netif_receive_skb - Softirq processing",
        "",
        "Capture on threshold breach:",
        "  - Kernel stack trace",
        "  - CPU information (enqueue CPU, receive CPU)",
        "  - Flow information (IP, port, protocol)",
        "  - Timing and queue depth",
        RULE,
    ]


def threshold_attached(backend: str) -> list[str]:
    head = "Kprobes attached:" if backend == "kprobe" else f"Probes attached ({backend} backend):"
    return [
        "",
        "BPF program loaded successfully",
        head,
        *(f"  - {h}" for h in HOOK_NAMES[backend][:2]),
        "",
        "Waiting for high latency events... Hit Ctrl-C to end.",
        "",
    ]


def threshold_event(ev: SlowEvent, threshold_us: float, extended: bool = False) -> list[str]:
    """The threshold tool's HIGH LATENCY EVENT: flow, CPUs, timing, stack."""
    proto = _protocol_number(ev)
    name = ev.protocol if proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP) else f"PROTO_{proto}"
    lines = [
        *_event_head(ev),
        f"Latency: {_whole_us(ev) / 1000.0:.3f} ms (threshold: {threshold_us / 1000.0:.3f} ms)",
        "",
        "Flow Information:",
        f"  Protocol: {name}",
        f"  Source: {ev.src}:{ev.sport or 0}",
        f"  Destination: {ev.dst}:{ev.dport or 0}",
        "",
        *cpu_and_timing(ev),
    ]
    if extended:
        lines += [
            "",
            "ovslat:",
            f"  Interface: {ev.interface}",
            f"  Receive context: {ev.context}",
            f"  Diagnosis: {ev.diagnosis}",
        ]
    if ev.stack:
        lines += ["", "Kernel Stack Trace:", *(f"  {frame}" for frame in ev.stack)]
    else:
        lines += ["", "Kernel Stack Trace: [unavailable]"]
    return lines + [RULE]


def threshold_summary(
    st: InterfaceStats | None, captured: int, extended: bool = False
) -> list[str]:
    """SUMMARY STATISTICS: the run's counters, breaches, events printed."""
    c = st.counters if st else Counters()
    lines = [
        "",
        RULE,
        "SUMMARY STATISTICS",
        RULE,
        "Packet Counters:",
        f"  Enqueued packets:        {c.enqueued}",
        f"  Received packets:        {c.received}",
        f"  Threshold breaches:      {c.slow}",
        f"  Below threshold:         {c.received - c.slow}",
        f"  Parse failures:          {c.parse_failures}",
        f"  Flow lookup failures:    {c.flow_lookup_failures + c.received_sync}",
    ]
    if extended and st:
        lines += _counters(st, True)[6:]
        lines.append(f"  Events over the rate limit: {c.events_suppressed}")
    lines += ["", f"Total events captured:     {captured}"]
    if c.received > 0:
        lines.append(f"Threshold breach rate:     {100.0 * c.slow / c.received:.2f}%")
    return lines + [RULE]
