"""JSON lines: one object per interval and a final summary. The schema is
documented in README ("JSON output"); keys are the names used everywhere."""

from __future__ import annotations

import json
import time

from .histogram import RESOLUTION, Histogram, bucket_bounds
from .model import DEBUG_COUNTERS, DEBUG_POINTS, STAGES, HopStats, InterfaceStats, Snapshot

SCHEMA_VERSION = 1


def _us(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1000.0, 3)


def stage_json(h: Histogram) -> dict:
    return {
        "count": h.count,
        "buckets": [
            {"low_ns": lo, "high_ns": hi, "count": n}
            for b, n in enumerate(h.buckets)
            if n
            for lo, hi in (bucket_bounds(b),)
        ],
        "sum_ns": h.sum_ns,
        "mean_us": _us(h.mean_ns()),
        "p50_us": _us(h.percentile_ns(0.50)),
        "p90_us": _us(h.percentile_ns(0.90)),
        "p99_us": _us(h.percentile_ns(0.99)),
        "p999_us": _us(h.percentile_ns(0.999)),
        "max_us": _us(h.max_ns) if h.count else None,
    }


def interface_json(st: InterfaceStats, queue_depth_source: str) -> dict:
    i, c = st.iface, st.counters
    out = {
        "name": i.name,
        "ifindex": i.ifindex,
        "netns": i.netns or None,
        "netns_inode": i.netns_inode,
        "role": i.role or None,
        "bridge": i.bridge or None,
        "gone": st.gone,
        "counters": c.as_dict(),
        "in_flight": c.in_flight,
        "drops": dict(st.drops),
        "queue_depth": {
            "avg": None if c.queue_depth_avg is None else round(c.queue_depth_avg, 3),
            "max": c.queue_depth_max,
            "samples": c.queue_depth_samples,
            "source": queue_depth_source,
        },
        "stages": {s: stage_json(st.stages[s]) for s in STAGES},
    }
    if st.debug:
        out["debug"] = {
            point: dict(zip(DEBUG_COUNTERS[1:], st.debug[p][1:], strict=True))
            for p, point in enumerate(DEBUG_POINTS)
        }
    return out


def _iso(wall_s: float) -> str:
    ms = int(wall_s % 1 * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(wall_s)) + f".{ms:03d}"


def hop_json(h: HopStats) -> dict:
    """The transit's figures at the top level (from, to, count, p50_us, ...),
    end to end under "e2e"."""
    return {
        "from": h.src.label,
        "to": h.dst.label,
        **stage_json(h.transit),
        "e2e": stage_json(h.e2e),
    }


def record(snap: Snapshot, kind: str, context: dict) -> str:
    """kind: "interval" or "summary". context: backend facts fixed for the run."""
    end = snap.start_wall_s + snap.duration_s
    obj = {
        "type": kind,
        "schema": SCHEMA_VERSION,
        "time": _iso(end),
        ("interval_s" if kind == "interval" else "duration_s"): round(snap.duration_s, 3),
        **context,
        "interfaces": [interface_json(st, context["queue_depth_source"]) for st in snap.interfaces],
        "hops": [hop_json(h) for h in snap.hops],
        "probe": {
            "run_time_ns": snap.cost.run_time_ns,
            "run_cnt": snap.cost.run_cnt,
            "ns_per_packet": None
            if snap.cost.ns_per_packet is None
            else round(snap.cost.ns_per_packet, 1),
        },
        "bucket_resolution": RESOLUTION,
    }
    if snap.probe_entries:
        obj["probe_entries"] = dict(zip(DEBUG_POINTS, snap.probe_entries, strict=True))
    if snap.notes:
        obj["notes"] = list(snap.notes)
    return json.dumps(obj, separators=(",", ":"))
