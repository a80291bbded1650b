"""What one measurement interval says about each interface: immutable data
passed from the collector to every renderer. Names match bpf/ovslat.h, the
JSON keys and the text report."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ovslat.abi import STAGES, DebugCounter, tunnel_of
from ovslat.model.histogram import Histogram

STAGE_TITLES = {
    "enqueue_to_receive": "STAGE1_enqueue_to_backlog -> STAGE2___netif_receive_skb",
    "receive_to_ip": "STAGE2___netif_receive_skb -> STAGE3_ip_rcv",
}
# The seed's debug counters and the probe points they are kept for, by the seed's names.
DEBUG_COUNTERS = tuple(c.name for c in DebugCounter)
DEBUG_POINTS = ("STAGE1_enqueue_to_backlog", "STAGE2___netif_receive_skb", "STAGE3_ip_rcv")


# The counters split per address family (struct counters' ipv6_* fields).
FAMILY_COUNTERS = ("enqueued", "received", "received_sync", "ip_rcv")


@dataclass(frozen=True)
class Counters:
    enqueued: int = 0
    received: int = 0  # S2 after S1: S1 -> S2 measured
    received_sync: int = 0  # S2 with no backlog (received in place: no S1)
    segments: int = 0  # wire packets in the skbs received (GRO and GSO merge several)
    ip_rcv: int = 0  # S3 after either kind of S2
    cross_cpu: int = 0
    parse_failures: int = 0
    flow_lookup_failures: int = 0
    queue_depth_sum: int = 0
    queue_depth_samples: int = 0
    queue_depth_max: int = 0  # per interval; the maximum of maxima when merged
    slow: int = 0  # S1 -> S2 above --threshold-us
    events_suppressed: int = 0  # slow, but over --max-events-per-sec
    dropped: int = 0  # enqueued, then freed before S2
    hops_lost: int = 0  # hop marks left here overwritten before the next interface's S1
    encapsulated: int = 0  # received in a VXLAN / Geneve tunnel (measured by the inner packet)
    # IPv6's share of the four stage counters (IPv4's: the rest); `families`
    ipv6_enqueued: int = 0
    ipv6_received: int = 0
    ipv6_received_sync: int = 0
    ipv6_ip_rcv: int = 0

    def __sub__(self, older: Counters) -> Counters:
        if older is ZERO_COUNTERS:
            return self
        vals = {f.name: getattr(self, f.name) - getattr(older, f.name) for f in fields(self)}
        vals["queue_depth_max"] = self.queue_depth_max
        return Counters(**vals)

    def __add__(self, other: Counters) -> Counters:
        if other is ZERO_COUNTERS:
            return self
        vals = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        vals["queue_depth_max"] = max(self.queue_depth_max, other.queue_depth_max)
        return Counters(**vals)

    def as_dict(self) -> dict[str, int]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not f.name.startswith(("queue_", "ipv6_"))
        }

    def families(self) -> dict[str, dict[str, int]]:
        """The stage counters per address family: {"ipv4": {...}, "ipv6": {...}}."""
        v6 = {name: getattr(self, f"ipv6_{name}") for name in FAMILY_COUNTERS}
        v4 = {name: getattr(self, name) - v6[name] for name in FAMILY_COUNTERS}
        return {"ipv4": v4, "ipv6": v6}

    @property
    def in_flight(self) -> int:
        """Enqueued but neither received nor dropped (yet): the reconciliation
        enqueued = received + dropped + in flight."""
        return self.enqueued - self.received - self.dropped

    @property
    def queue_depth_avg(self) -> float | None:
        if not self.queue_depth_samples:
            return None
        return self.queue_depth_sum / self.queue_depth_samples


# An idle interval's counters: the collector hands out this one object, so that
# adding it to a run's totals (thousands of idle interfaces) is an identity test.
ZERO_COUNTERS = Counters()


def _add_debug(a: tuple, b: tuple, sign: int = 1) -> tuple:
    if not a:
        return tuple(tuple(sign * y for y in row) for row in b)
    if not b:
        return a
    return tuple(
        tuple(x + sign * y for x, y in zip(ra, rb, strict=True))
        for ra, rb in zip(a, b, strict=True)
    )


def _add_drops(a: tuple, b: tuple, sign: int = 1) -> tuple:
    out = dict(a)
    for reason, n in b:
        out[reason] = out.get(reason, 0) + sign * n
    return tuple(sorted((r, n) for r, n in out.items() if n))


@dataclass(frozen=True)
class Interface:
    """A monitored interface, as the user named it and as the kernel knows it."""

    name: str
    ifindex: int
    netns_inode: int
    netns: str = ""  # name under /var/run/netns, "" for ovslat's own namespace
    slot: int = 0
    rps: bool | None = None  # RPS on any RX queue; None: not known (another netns)
    role: str = ""  # uplink | internal | pod | vm | tunnel, when found through a bridge
    bridge: str = ""
    # who the interface belongs to, as the orchestrator names it ("NAMESPACE/POD",
    # an OpenStack VM's uuid); "" when OVSDB's external_ids say nothing
    workload: str = ""
    # where the namespace is opened when it has no /var/run/netns name (a pod's,
    # found through a process): "/proc/PID/ns/net"
    netns_path: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}@{self.netns}" if self.netns else self.name

    @property
    def ns_path(self) -> str | None:
        """The file naming the interface's network namespace; None for ovslat's own."""
        if self.netns_path:
            return self.netns_path
        return f"/var/run/netns/{self.netns}" if self.netns else None


# The stages of every idle interval (nobody writes to a Snapshot's stages).
EMPTY_STAGES = {s: Histogram.empty() for s in STAGES}


@dataclass(frozen=True)
class InterfaceStats:
    iface: Interface
    counters: Counters
    stages: dict[str, Histogram]
    # debug[point][counter] for the seed's --debug view; () when not enabled
    debug: tuple[tuple[int, ...], ...] = ()
    gone: bool = False  # removed from the bridge or deleted: figures are its last
    drops: tuple[tuple[str, int], ...] = ()  # (kernel drop reason, count)

    def __sub__(self, older: InterfaceStats) -> InterfaceStats:
        return InterfaceStats(
            self.iface,
            self.counters - older.counters,
            {s: self.stages[s] - older.stages[s] for s in STAGES},
            _add_debug(self.debug, older.debug, -1),
            self.gone,
            _add_drops(self.drops, older.drops, -1),
        )

    @property
    def idle(self) -> bool:
        """The collector's interval of an interface that counted nothing (told
        by identity: thousands of them are added to a run's totals)."""
        return self.counters is ZERO_COUNTERS and self.stages is EMPTY_STAGES and not self.drops

    def __add__(self, other: InterfaceStats) -> InterfaceStats:
        """This one followed by `other`, a later interval of the same interface."""
        if other.idle and not other.debug and other.gone == self.gone:
            return self
        return InterfaceStats(
            self.iface,
            self.counters + other.counters,
            {s: self.stages[s] + other.stages[s] for s in STAGES},
            _add_debug(self.debug, other.debug),
            other.gone,
            _add_drops(self.drops, other.drops),
        )


@dataclass(frozen=True)
class HopStats:
    """One hop between two monitored interfaces, found in the traffic.
    transit: S2 on `src` -> S1 on `dst` (for uplink -> br-int: the OVS datapath);
    e2e: the first S1 on `src` -> S3 on `dst`."""

    src: Interface
    dst: Interface
    transit: Histogram
    e2e: Histogram
    # the VXLAN / Geneve tunnel its packets arrived in (struct origin.tunnel:
    # type << 24 | VNI), 0 for none: each tunnel's packets are a hop of their own
    tunnel: int = 0

    @property
    def key(self) -> tuple[int, int, int]:
        return self.src.slot, self.dst.slot, self.tunnel

    @property
    def tunnel_info(self) -> tuple[str, int] | None:
        """(type, VNI), None when not encapsulated."""
        return tunnel_of(self.tunnel)

    @property
    def tunnel_label(self) -> str:
        t = self.tunnel_info
        return f"{t[0]} vni {t[1]}" if t else ""

    def __sub__(self, older: HopStats) -> HopStats:
        return HopStats(
            self.src, self.dst, self.transit - older.transit, self.e2e - older.e2e, self.tunnel
        )

    def __add__(self, later: HopStats) -> HopStats:
        return HopStats(
            self.src, self.dst, self.transit + later.transit, self.e2e + later.e2e, self.tunnel
        )


@dataclass(frozen=True)
class ProbeCost:
    run_time_ns: int = 0
    run_cnt: int = 0
    packets: int = 0

    def __add__(self, o: ProbeCost) -> ProbeCost:
        return ProbeCost(
            self.run_time_ns + o.run_time_ns, self.run_cnt + o.run_cnt, self.packets + o.packets
        )

    @property
    def ns_per_packet(self) -> float | None:
        return self.run_time_ns / self.packets if self.packets and self.run_time_ns else None


@dataclass(frozen=True)
class Snapshot:
    """One interval (or, merged, a whole run)."""

    start_wall_s: float
    duration_s: float
    backend: str
    interfaces: tuple[InterfaceStats, ...]
    probe_entries: tuple[int, ...] = ()  # PROBE_ENTRY per point, debug only
    notes: tuple[str, ...] = field(default=())
    cost: ProbeCost = field(default_factory=ProbeCost)
    hops: tuple[HopStats, ...] = ()
    events_lost: int = 0  # slow-packet events the perf buffer had no room for

    def merge(self, later: Snapshot) -> Snapshot:
        """This run so far plus a later interval."""
        mine = {s.iface.slot: s for s in self.interfaces}
        merged = []
        for s in later.interfaces:
            merged.append(mine.pop(s.iface.slot) + s if s.iface.slot in mine else s)
        merged.extend(mine.values())
        merged.sort(key=lambda s: s.iface.slot)
        zero = (0,) * len(DEBUG_POINTS)
        probes = tuple(
            a + b
            for a, b in zip(self.probe_entries or zero, later.probe_entries or zero, strict=True)
        )
        return Snapshot(
            self.start_wall_s,
            self.duration_s + later.duration_s,
            self.backend,
            tuple(merged),
            probes if (self.probe_entries or later.probe_entries) else (),
            tuple(dict.fromkeys(self.notes + later.notes)),
            self.cost + later.cost,
            _merge_hops(self.hops, later.hops),
            self.events_lost + later.events_lost,
        )


def _merge_hops(a: tuple[HopStats, ...], b: tuple[HopStats, ...]) -> tuple[HopStats, ...]:
    out = {h.key: h for h in a}
    for h in b:
        out[h.key] = out[h.key] + h if h.key in out else h
    return tuple(sorted(out.values(), key=lambda h: h.key))
