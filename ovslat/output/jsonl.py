"""JSON lines: one object per interval and a final summary. The schema is
documented in README ("JSON output"); keys are the names used everywhere."""

from __future__ import annotations

import json
import time

from ovslat.abi import TUNNEL_TYPE_SHIFT, TunnelType
from ovslat.model.histogram import (
    NBUCKETS,
    RESOLUTION,
    Histogram,
    bucket_bounds,
    bucket_of,
    latency_figures,
)
from ovslat.model.snapshot import (
    DEBUG_COUNTERS,
    DEBUG_POINTS,
    STAGES,
    Counters,
    HopStats,
    Interface,
    InterfaceStats,
    ProbeCost,
    Snapshot,
)

SCHEMA_VERSION = 1


def stage_json(h: Histogram) -> dict:
    figures = latency_figures(h)
    return {
        "count": figures.pop("count"),
        "buckets": [
            {"low_ns": lo, "high_ns": hi, "count": n}
            for b, n in enumerate(h.buckets)
            if n
            for lo, hi in (bucket_bounds(b),)
        ],
        "sum_ns": h.sum_ns,
        **figures,
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
        "workload": i.workload or None,
        "gone": st.gone,
        "counters": c.as_dict(),
        "families": c.families(),
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
    t = h.tunnel_info
    return {
        "from": h.src.label,
        "to": h.dst.label,
        "tunnel": {"type": t[0], "vni": t[1]} if t else None,
        **stage_json(h.transit),
        "e2e": stage_json(h.e2e),
    }


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# id(InterfaceStats) -> (it, its queue-depth source, its JSON): the collector
# hands out one object per idle interface, interval after interval, so at
# thousands of interfaces most of a record is text already written once.
# Holding the object keeps its id from being reused; only the last record's
# entries are kept.
_encoded: dict[int, tuple[InterfaceStats, str, str]] = {}


def _interfaces_json(stats: tuple[InterfaceStats, ...], source: str) -> str:
    global _encoded
    seen = {}
    parts = []
    for st in stats:
        hit = _encoded.get(id(st))
        if hit is None or hit[0] is not st or hit[1] != source:
            hit = (st, source, _dumps(interface_json(st, source)))
        seen[id(st)] = hit
        parts.append(hit[2])
    _encoded = seen
    return "[" + ",".join(parts) + "]"


def record(snap: Snapshot, kind: str, context: dict, **extra) -> str:
    """One JSON line: kind "start", "interval" or "summary"; context: backend
    facts fixed for the run; extra: keys of the caller's (a run's phase)."""
    obj = {**record_dict(snap, kind, context, with_interfaces=False), **extra}
    keys = list(obj)
    at = keys.index("interfaces")
    head = _dumps({k: obj[k] for k in keys[:at]})
    tail = _dumps({k: obj[k] for k in keys[at + 1 :]})
    inner = _interfaces_json(snap.interfaces, context["queue_depth_source"])
    return f'{head[:-1]},"interfaces":{inner},{tail[1:]}'


def record_dict(snap: Snapshot, kind: str, context: dict, with_interfaces: bool = True) -> dict:
    """The record as a dict; without interfaces, their key holds None (record()
    writes them from its cache)."""
    end = snap.start_wall_s + snap.duration_s
    obj = {
        "type": kind,
        "schema": SCHEMA_VERSION,
        "time": _iso(end),
        ("interval_s" if kind == "interval" else "duration_s"): round(snap.duration_s, 3),
        **context,
        "interfaces": [interface_json(st, context["queue_depth_source"]) for st in snap.interfaces]
        if with_interfaces
        else None,
        "hops": [hop_json(h) for h in snap.hops],
        "probe": {
            "run_time_ns": snap.cost.run_time_ns,
            "run_cnt": snap.cost.run_cnt,
            "packets": snap.cost.packets,
            "ns_per_packet": None
            if snap.cost.ns_per_packet is None
            else round(snap.cost.ns_per_packet, 1),
        },
        "events_lost": snap.events_lost,
        "bucket_resolution": RESOLUTION,
    }
    if snap.probe_entries:
        obj["probe_entries"] = dict(zip(DEBUG_POINTS, snap.probe_entries, strict=True))
    if snap.notes:
        obj["notes"] = list(snap.notes)
    return obj


# ---- reading back (ovslat report) -------------------------------------------------


def _hist(stage: dict) -> Histogram:
    counts = [0] * NBUCKETS
    for b in stage["buckets"]:
        counts[bucket_of(b["low_ns"])] += b["count"]
    max_us = stage.get("max_us")
    return Histogram(tuple(counts), stage["sum_ns"], 0 if max_us is None else round(max_us * 1000))


def _interface(obj: dict, slot: int) -> InterfaceStats:
    q = obj["queue_depth"]
    samples = q["samples"]
    counters = Counters(
        **obj["counters"],
        queue_depth_sum=round((q["avg"] or 0) * samples),
        queue_depth_samples=samples,
        queue_depth_max=q["max"] or 0,
    )
    iface = Interface(
        obj["name"],
        obj["ifindex"],
        obj["netns_inode"],
        obj["netns"] or "",
        slot,
        None,
        obj["role"] or "",
        obj["bridge"] or "",
        obj.get("workload") or "",
    )
    debug: tuple[tuple[int, ...], ...] = ()
    if "debug" in obj:
        debug = tuple(
            (0, *(obj["debug"][point].get(c, 0) for c in DEBUG_COUNTERS[1:]))
            for point in DEBUG_POINTS
        )
    return InterfaceStats(
        iface,
        counters,
        {s: _hist(obj["stages"][s]) for s in STAGES},
        debug,
        obj["gone"],
        tuple(sorted(obj["drops"].items())),
    )


def parse_record(obj: dict) -> Snapshot:
    """An "interval" or "summary" record back into the Snapshot it was written
    from (histograms, counters, hops), so a saved run renders like a live one."""
    duration = obj.get("interval_s", obj.get("duration_s", 0.0))
    end = time.mktime(time.strptime(obj["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    end += int(obj["time"][20:23]) / 1000
    stats = tuple(_interface(o, slot) for slot, o in enumerate(obj["interfaces"]))
    by_label = {s.iface.label: s.iface for s in stats}
    hops = []
    for h in obj["hops"]:
        src, dst = by_label.get(h["from"]), by_label.get(h["to"])
        if src and dst:
            t = h.get("tunnel")
            word = (TunnelType[t["type"].upper()] << TUNNEL_TYPE_SHIFT | t["vni"]) if t else 0
            hops.append(HopStats(src, dst, _hist(h), _hist(h["e2e"]), word))
    probe = obj.get("probe", {})
    cost = ProbeCost(
        probe.get("run_time_ns", 0),
        probe.get("run_cnt", 0),
        probe.get("packets", sum(s.counters.enqueued for s in stats)),
    )
    entries = obj.get("probe_entries")
    return Snapshot(
        end - duration,
        duration,
        obj["backend"],
        stats,
        tuple(entries[p] for p in DEBUG_POINTS) if entries else (),
        tuple(obj.get("notes", ())),
        cost,
        tuple(hops),
        obj.get("events_lost", 0),
    )
