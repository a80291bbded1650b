"""`ovslat watch --format text`: the seed summary tool's interval report
(enqueue_to_iprec_latency), one block per interface, in its sections and
wording, with ovslat's additions (percentiles, drops, in flight, hops) in
place. The whole run ends as the seed's CUMULATIVE report. The seed-compatible
commands print the seed's text line for line instead: output/seedtext.py."""

from __future__ import annotations

import time

from ovslat.model.snapshot import (
    DEBUG_COUNTERS,
    DEBUG_POINTS,
    STAGE_TITLES,
    InterfaceStats,
    Snapshot,
)

RULE = "=" * 80
THIN = "-" * 80
BAR = 40

# Which debug counters the seed prints for each probe point.
DEBUG_ROWS = (
    (
        "PROBE_ENTRY",
        "HANDLE_ENTRY",
        "PARSE_ENTRY",
        "PARSE_SUCCESS",
        "IP_FILTER",
        "PORT_FILTER",
        "FLOW_CREATE",
    ),
    (
        "PROBE_ENTRY",
        "HANDLE_ENTRY",
        "PARSE_ENTRY",
        "PARSE_SUCCESS",
        "IP_FILTER",
        "PORT_FILTER",
        "FLOW_LOOKUP",
        "FLOW_FOUND",
        "LATENCY_SUBMIT",
    ),
    ("PROBE_ENTRY", "HANDLE_ENTRY", "FLOW_FOUND", "LATENCY_SUBMIT"),
)


def histogram_rows(h) -> list[str]:
    """The seed's "Latency distribution" rows: its microsecond rows, bars
    scaled to the largest row."""
    rows = h.seed_rows()
    top = max((n for _, n in rows), default=0)
    return [
        f"      {label:<16}: {n:6d} ({100.0 * n / h.count:5.1f}%) |{'*' * (BAR * n // top):<{BAR}}|"
        for label, n in rows
    ]


def _stamp(wall_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_s))


def _stage(st: InterfaceStats, stage: str, title: str) -> list[str]:
    h = st.stages[stage]
    total = h.count
    out = [f"  {title}:", f"    Total samples: {total}"]
    if total:
        out.append("    Latency distribution:")
        out += histogram_rows(h)
        p50, p99 = h.percentile_ns(0.5), h.percentile_ns(0.99)
        assert p50 is not None and p99 is not None  # None only for an empty histogram
        out.append(
            f"    p50 {p50 / 1000:.1f}us  p99 {p99 / 1000:.1f}us  max {h.max_ns / 1000:.1f}us"
        )
    return out


def interface_block(
    st: InterfaceStats, snap: Snapshot, s3: str | None, cumulative: bool = False
) -> list[str]:
    """One interface's report: of one interval, or (cumulative) of the whole
    run, headed as the seed heads its own so that a script summing the
    interval reports never counts the run twice."""
    c = st.counters
    i = st.iface
    where = f", netns {i.netns}" if i.netns else ""
    where += f", {i.role} of {i.bridge}" if i.bridge else ""
    where += f", {i.workload}" if i.workload else ""
    where += ", GONE: last figures" if st.gone else ""
    title = (
        f"CUMULATIVE Enqueue → IP_RCV Latency Report (Total Duration: {snap.duration_s:.1f}s)"
        if cumulative
        else f"Enqueue → IP_RCV Latency Report (Interval: {snap.duration_s:.1f}s)"
    )
    lines = [
        RULE,
        f"[{_stamp(snap.start_wall_s + snap.duration_s)}] {title}",
        f"Interface: {i.name} (ifindex {i.ifindex}{where})  backend: {snap.backend}",
        RULE,
        "",
        "Latency Measurements:",
        THIN,
        "",
    ]
    lines += _stage(st, "enqueue_to_receive", STAGE_TITLES["enqueue_to_receive"])
    lines += ["    ^^^ CRITICAL ASYNC BOUNDARY (enqueue → receive) ^^^", ""]
    if s3:
        lines += _stage(st, "receive_to_ip", STAGE_TITLES["receive_to_ip"])
    else:
        lines.append(f"  {STAGE_TITLES['receive_to_ip']}: not measured on this kernel")
    avg = c.queue_depth_avg
    lines += [
        "",
        RULE,
        "Packet Counters (Cumulative):" if cumulative else "Packet Counters (Interval):",
        f"  Enqueued packets:        {c.enqueued}",
        f"  Received packets:        {c.received}",
        f"  Synchronous receives:    {c.received_sync}  "
        "(no backlog: no S1 -> S2, S2 -> S3 measured)",
        f"  Segments received:       {c.segments}  (wire packets in those skbs: GRO merges)",
        f"  IP layer packets:        {c.ip_rcv}",
        f"  Cross-CPU migrations:    {c.cross_cpu}",
        f"  Parse failures:          {c.parse_failures}",
        f"  Flow lookup failures:    {c.flow_lookup_failures}",
        f"  Dropped before receive:  {c.dropped}"
        + (f" ({', '.join(f'{r}: {n}' for r, n in st.drops)})" if st.drops else ""),
        f"  In flight:               {c.in_flight}  (enqueued = received + dropped + in flight)",
        "",
        "Backlog Queue Statistics:",
        (
            f"  Average queue depth: {avg:.2f} packets"
            if avg is not None
            else "  Average queue depth: n/a (no sample yet)"
        ),
        f"  Max queue depth: {c.queue_depth_max} packets",
        f"  Total enqueue operations: {c.enqueued}",
        RULE,
    ]
    if c.slow or c.events_suppressed:
        lines.insert(
            -1,
            f"  Slow packets:            {c.slow} "
            f"({c.events_suppressed} events over the rate limit)",
        )
    if st.debug:
        lines += debug_block(st, snap)
    return lines


def debug_block(st: InterfaceStats, snap: Snapshot) -> list[str]:
    lines = [RULE, f"DEBUG STATISTICS (Stage Execution Flow) — {st.iface.label}", RULE]
    for p, point in enumerate(DEBUG_POINTS):
        lines += ["", f"{point}:"]
        for name in DEBUG_ROWS[p]:
            if name == "PROBE_ENTRY":
                value = snap.probe_entries[p] if snap.probe_entries else 0
                lines.append(f"  {name:<25}: {value}    (all interfaces)")
            else:
                lines.append(f"  {name:<25}: {st.debug[p][DEBUG_COUNTERS.index(name)]}")
    lines.append(RULE)
    return lines


def _figures(h) -> str:
    if not h.count:
        return "0 packets"
    pct = "  ".join(
        f"p{q}:{h.percentile_ns(v) / 1000:.1f}us"
        for q, v in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))
    )
    return f"{h.count} packets  {pct}  max {h.max_ns / 1000:.1f}us"


def hops_block(snap: Snapshot) -> list[str]:
    lines = [
        RULE,
        "Per-hop latency (one packet seen on two interfaces, matched by its headers,",
        "a tunnelled packet's by its inner headers; not across NAT, which rewrites them)",
        RULE,
    ]
    for h in snap.hops:
        a, b = h.src.label, h.dst.label
        lines += [
            f"  {a} -> {b}" + (f"  ({h.tunnel_label})" if h.tunnel else ""),
            f"    transit    (S2 on {a} -> S1 on {b}): {_figures(h.transit)}",
            f"    end to end (S1 on {a} -> S3 on {b}): {_figures(h.e2e)}",
        ]
    for st in snap.interfaces:
        if st.counters.hops_lost:
            lines.append(
                f"  {st.iface.label}: {st.counters.hops_lost} hop(s) lost: a packet received here "
                "left its mark, and another packet took the mark's place before the next "
                "interface received it (or it left through an unmeasured interface)"
            )
    lines.append(RULE)
    return lines


def cpu_and_timing(ev) -> list[str]:
    """An event's `CPU Information:` and `Timing Information:` sections, as
    the seed's threshold tool prints them (seedtext.py's events share them)."""
    lines = [
        "CPU Information:",
        f"  Enqueue CPU: {ev.enqueue_cpu}",
        f"  Receive CPU: {ev.receive_cpu}",
    ]
    if ev.cross_cpu:
        lines.append("  ^^^ CROSS-CPU MIGRATION DETECTED ^^^")
    depth = "not sampled" if ev.queue_depth is None else f"{ev.queue_depth} packets"
    return lines + [
        "",
        "Timing Information:",
        f"  Enqueue timestamp: {ev.ts_enqueue_ns} ns",
        f"  Receive timestamp: {ev.ts_receive_ns} ns",
        f"  Queue depth: {depth}",
    ]


def event(ev) -> str:
    """The seed threshold tool's HIGH LATENCY EVENT record, plus context and diagnosis."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.wall_s))
    port = lambda p: "" if p is None else f":{p}"  # noqa: E731
    lines = [
        RULE,
        f"HIGH LATENCY EVENT #{ev.number}",
        RULE,
        f"Timestamp: {stamp}.{int(ev.wall_s % 1 * 1e6):06d}",
        f"Interface: {ev.interface}",
        *(
            [f"Stage: transit from {ev.from_interface} (S2 there -> S1 here)"]
            if ev.stage == "transit"
            else []
        ),
        "",
        f"Latency: {ev.latency_ns / 1e6:.3f} ms (threshold: {ev.threshold_ns / 1e6:.3f} ms)",
        "",
        "Flow Information:",
        f"  Protocol: {ev.protocol}",
        f"  Source: {ev.src}{port(ev.sport)}",
        f"  Destination: {ev.dst}{port(ev.dport)}",
        *(
            [
                f"  Tunnel: {ev.tunnel['type']} vni {ev.tunnel['vni']}, outer "
                f"{ev.tunnel['src']}:{ev.tunnel['sport']} -> "
                f"{ev.tunnel['dst']}:{ev.tunnel['dport']}"
            ]
            if ev.tunnel
            else []
        ),
        "",
        *cpu_and_timing(ev),
        "",
        f"Receive context: {ev.context}",
        f"Diagnosis: {ev.diagnosis}",
        "",
        "Kernel Stack Trace:",
    ]
    lines += [f"  {frame}" for frame in ev.stack] or ["  (not captured)"]
    lines.append(RULE)
    return "\n".join(lines) + "\n"


def render(snap: Snapshot, s3: str | None, summary: bool = False) -> str:
    blocks = [
        "\n".join(interface_block(st, snap, s3, cumulative=summary)) for st in snap.interfaces
    ]
    if snap.hops:
        blocks.append("\n".join(hops_block(snap)))
    if snap.events_lost:
        blocks.append(
            f"Note: {snap.events_lost} slow-packet event(s) lost: the perf buffer was full "
            "(lower --max-events-per-sec or read faster)"
        )
    if snap.notes:
        blocks.append("\n".join(f"Note: {n}" for n in snap.notes))
    return "\n".join(blocks) + "\n"
