"""The Prometheus exposition of `ovslat export`: renders the latest Published
(the run's totals and its last interval) on each scrape, never touching a
BPF map. Counters are the run's totals, so they only grow; an interface that
leaves the bridge leaves the exposition.

The only prometheus_client user. Series and their labels: docs/fleet.md.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import socket
import threading
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.metrics_core import InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ovslat.errors import UserError
from ovslat.model.histogram import NBUCKETS, Histogram, bucket_bounds
from ovslat.model.snapshot import FAMILY_COUNTERS, STAGES, Interface, InterfaceStats, Snapshot

DEFAULT_LISTEN = "127.0.0.1:9433"
# Exposed `le` bounds are kernel bucket edges (so every cumulative count is
# exact, never interpolated) from 128 ns to 2^34 ns (17.2 s); above: +Inf.
LOW_NS, HIGH_NS = 1 << 7, 1 << 34
# A kernel bucket b (b >= 4) is [(4+s) << (m-2), (5+s) << (m-2)) with s = b % 4:
# s = 3 ends on a power of two, s = 1 halfway (x1.5) through the octave.
EDGES_PER_OCTAVE = {1: (3,), 2: (1, 3), 4: (0, 1, 2, 3)}
HOP_STAGES = ("transit", "e2e")
BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def le_buckets(per_octave: int) -> tuple[int, ...]:
    """Kernel bucket indices whose upper edges are exposed as `le` bounds."""
    keep = EDGES_PER_OCTAVE[per_octave]
    return tuple(
        b
        for b in range(4, NBUCKETS - 1)  # the last kernel bucket is open-ended: +Inf
        if b % 4 in keep and LOW_NS <= bucket_bounds(b)[1] <= HIGH_NS
    )


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT -> (host, port); HOST must be an IP address."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise UserError(
            f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:9433, [::1]:9433, "
            "0.0.0.0:9433 for every address)"
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UserError(
            f"--listen {text!r}: {host!r} is not an IP address (e.g. 127.0.0.1, ::1, 0.0.0.0)"
        ) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UserError(f"--listen {text!r}: port must be 1-65535")
    return host, int(port)


def registry(exposition: Exposition) -> CollectorRegistry:
    """The exposition plus the exporter's own CPU and memory."""
    reg = CollectorRegistry()
    reg.register(exposition)
    ProcessCollector(registry=reg)
    return reg


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(host: str, port: int, registry: CollectorRegistry):
    """The HTTP endpoint (/metrics, OpenMetrics when the scraper asks for it) in
    daemon threads; returns the server, to shut down."""
    shown = where(host, port)
    try:
        # Our own WSGI server around the client's app, not start_http_server:
        # Debian 12's prometheus-client (0.16) returns nothing from it, so the
        # server could never be shut down.
        cls = _Server6 if ":" in host else _Server
        server = make_server(host, port, make_wsgi_app(registry), cls, handler_class=_Quiet)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(
                f"--listen {shown}: port {port} is already in use (find the owner with "
                f"`ss -ltnp 'sport = :{port}'`)"
            ) from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"--listen {shown}: {host} is not an address of this host") from None
        raise UserError(f"--listen {shown}: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the exit


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per scrape on stderr is noise under systemd


@dataclass(frozen=True)
class Published:
    """What a scrape renders: the run so far and its latest interval."""

    total: Snapshot
    last: Snapshot
    datapaths: dict[str, str] = field(default_factory=dict)  # bridge -> datapath type
    collections: int = 1
    collection_s: float = 0.0  # how long the latest read of the BPF maps took
    wall_s: float = 0.0
    bpf_stats: bool = False


class Exposition(Collector):
    """Renders the latest Published. Labels per interface: interface, and when
    known netns, role, bridge, datapath; stage; from/to for hops, with the
    tunnel's type and VNI ("" for none); reason for drops."""

    def __init__(self, per_octave: int = 1, info: dict[str, str] | None = None):
        self.edges = le_buckets(per_octave)
        self.info = dict(info or {})
        self.published: Published | None = None

    def publish(self, p: Published) -> None:
        self.published = p  # one reference swap: a scrape sees all of p or none of it

    def collect(self):
        p = self.published  # read once: the collection loop may publish meanwhile
        if p is None:  # still attaching
            return
        yield from self._render(p)

    def _render(self, p: Published):
        yield InfoMetricFamily(
            "ovslat",
            "ovslat build and measurement settings",
            value={**self.info, "backend": p.total.backend, "bpf_stats": _onoff(p.bpf_stats)},
        )
        yield from self._own(p)
        live = _live(p.total)
        last = {s.iface.slot: s for s in p.last.interfaces}
        labels = {slot: _labels(st.iface, p.datapaths) for slot, st in live.items()}
        yield from self._interfaces(live, last, labels)
        yield from self._hops(p, live)

    def _own(self, p: Published):
        live = sum(not s.gone for s in p.total.interfaces)
        yield _gauge("ovslat_interfaces", "interfaces measured now", [({}, live)])
        yield _gauge(
            "ovslat_interface_slots_used",
            "interface slots taken in the BPF maps since start (never reused; --max-ifaces)",
            [({}, len(p.total.interfaces))],
        )
        yield _counter(
            "ovslat_collections", "reads of the BPF maps since start", [({}, p.collections)]
        )
        yield _counter(
            "ovslat_events_lost",
            "slow-packet events lost to a full perf buffer",
            [({}, p.total.events_lost)],
        )
        yield _gauge(
            "ovslat_collection_duration_seconds",
            "time the latest read of the BPF maps took",
            [({}, p.collection_s)],
        )
        yield _gauge(
            "ovslat_last_collection_timestamp_seconds",
            "wall-clock time of the latest read of the BPF maps",
            [({}, p.wall_s)],
        )
        if p.bpf_stats or p.total.cost.run_cnt:
            cost = p.total.cost
            yield _counter(
                "ovslat_probe_run_time_seconds",
                "time spent in ovslat's BPF programs (kernel.bpf_stats_enabled=1)",
                [({}, cost.run_time_ns / 1e9)],
            )
            yield _counter(
                "ovslat_probe_runs", "runs of ovslat's BPF programs", [({}, cost.run_cnt)]
            )
            per_packet = p.last.cost.ns_per_packet
            if per_packet is not None:
                yield _gauge(
                    "ovslat_probe_cost_seconds_per_packet",
                    "BPF run time per enqueued packet over the latest interval "
                    "(base unit: promtool rejects _ns_)",
                    [({}, per_packet / 1e9)],
                )

    def _interfaces(self, live, last, labels):
        lat = Metric(
            "ovslat_latency_seconds",
            "per-interface stage latency: enqueue_to_receive (S1->S2), receive_to_ip (S2->S3); "
            "le bounds are the kernel histogram's bucket edges",
            "histogram",
            "seconds",
        )
        for slot, st in live.items():
            for stage in STAGES:
                self._histogram(lat, {**labels[slot], "stage": stage}, st.stages[stage])
        yield lat
        yield _gauge(
            "ovslat_latency_max_seconds",
            "exact maximum latency over the latest collection interval (0: no packet)",
            [
                ({**labels[s], "stage": stage}, last[s].stages[stage].max_ns / 1e9)
                for s in live
                if s in last
                for stage in STAGES
            ],
        )
        families = {s: st.counters.families() for s, st in live.items()}
        for name, doc in COUNTERS:
            if name in FAMILY_COUNTERS:  # per address family: sum by without (family)
                yield _counter(
                    f"ovslat_{name}",
                    doc + "; family: ipv4 or ipv6",
                    [
                        ({**labels[s], "family": fam}, by_family[name])
                        for s in live
                        for fam, by_family in families[s].items()
                    ],
                )
                continue
            yield _counter(
                f"ovslat_{name}",
                doc,
                [(labels[s], getattr(st.counters, name)) for s, st in live.items()],
            )
        yield _counter(
            "ovslat_dropped",
            "packets enqueued (S1), then freed before S2, by the kernel's drop reason",
            [
                ({**labels[s], "reason": reason}, n)
                for s, st in live.items()
                for reason, n in _drops(st)
            ],
        )
        yield _counter(
            "ovslat_queue_depth_samples",
            "enqueues whose backlog length was sampled",
            [(labels[s], st.counters.queue_depth_samples) for s, st in live.items()],
        )
        yield _counter(
            "ovslat_queue_depth_packets",
            "sum of the sampled backlog lengths (average = rate of this / rate of samples)",
            [(labels[s], st.counters.queue_depth_sum) for s, st in live.items()],
        )
        yield _gauge(
            "ovslat_queue_depth_max",
            "longest backlog seen at a sampled enqueue over the latest collection interval",
            [(labels[s], last[s].counters.queue_depth_max) for s in live if s in last],
        )
        yield _gauge(
            "ovslat_in_flight",
            "packets enqueued but neither received nor dropped yet",
            [(labels[s], st.counters.in_flight) for s, st in live.items()],
        )

    def _hops(self, p: Published, live):
        hop = Metric(
            "ovslat_hop_latency_seconds",
            "between two measured interfaces: transit (S2 on from -> S1 on to, e.g. the OVS "
            "datapath) and e2e (first S1 on from -> S3 on to)",
            "histogram",
            "seconds",
        )
        for h in p.total.hops:
            if h.src.slot in live and h.dst.slot in live:
                for stage, hist in zip(HOP_STAGES, (h.transit, h.e2e), strict=True):
                    t = h.tunnel_info
                    labels = {
                        "from": h.src.label,
                        "to": h.dst.label,
                        "stage": stage,
                        "tunnel": t[0] if t else "",
                        "vni": str(t[1]) if t else "",
                    }
                    self._histogram(hop, labels, hist)
        if hop.samples:
            yield hop

    def _histogram(self, family: Metric, labels: dict, h: Histogram) -> None:
        below = list(itertools.accumulate(h.buckets))  # below[b]: samples < bucket b's high edge
        for b in self.edges:
            le = floatToGoString(bucket_bounds(b)[1] / 1e9)
            family.add_sample(f"{family.name}_bucket", {**labels, "le": le}, below[b])
        family.add_sample(f"{family.name}_bucket", {**labels, "le": "+Inf"}, below[-1])
        family.add_sample(f"{family.name}_count", labels, below[-1])
        family.add_sample(f"{family.name}_sum", labels, h.sum_ns / 1e9)


COUNTERS = (
    ("enqueued", "packets enqueued to a CPU backlog (S1)"),
    ("received", "packets dequeued by __netif_receive_skb (S2)"),
    ("ip_rcv", "packets that reached ip_rcv (S3)"),
    ("cross_cpu", "packets received on another CPU than they were enqueued on"),
    ("parse_failures", "packets whose IP header could not be read"),
    (
        "received_sync",
        "packets received in place by netif_receive_skb(), without a backlog (no S1)",
    ),
    (
        "segments",
        "wire packets in the sk_buffs received (GRO merges several into one)",
    ),
    (
        "flow_lookup_failures",
        "S2 of an enqueued packet whose S1 record was missing (flow map full, expired)",
    ),
    (
        "hops_lost",
        "packets received here whose hop to the next interface was lost (mark overwritten)",
    ),
    (
        "encapsulated",
        "packets received in a VXLAN or Geneve tunnel, measured by their inner packet",
    ),
)


def _live(total: Snapshot) -> dict[int, InterfaceStats]:
    """Interfaces measured now, one per label set (slots are never reused, so an
    interface removed and added again is a new slot: its counters restart)."""
    by_key = {}
    for st in total.interfaces:
        if not st.gone:
            by_key[(st.iface.netns, st.iface.name)] = st  # a later slot wins
    return {st.iface.slot: st for st in by_key.values()}


def _labels(i: Interface, datapaths: dict[str, str]) -> dict[str, str]:
    out = {"interface": i.name}
    if i.netns:
        out["netns"] = i.netns
    if i.role:
        out["role"] = i.role
    if i.workload:
        out["workload"] = i.workload
    if i.bridge:
        out["bridge"] = i.bridge
        if datapaths.get(i.bridge):
            out["datapath"] = datapaths[i.bridge]
    return out


def _drops(st: InterfaceStats) -> list[tuple[str, int]]:
    """Per reason; a drop the kernel gave no reason for (Linux < 5.17) is UNKNOWN."""
    out = list(st.drops)
    unnamed = st.counters.dropped - sum(n for _, n in out)
    if unnamed > 0:
        out.append(("UNKNOWN", unnamed))
    return out


def _onoff(flag: bool) -> str:
    return "on" if flag else "off"


def _family(name: str, doc: str, typ: str, samples, suffix: str = "") -> Metric:
    m = Metric(name, doc, typ)
    for labels, value in samples:
        m.add_sample(name + suffix, labels, value)
    return m


def _counter(name: str, doc: str, samples) -> Metric:
    return _family(name, doc, "counter", samples, "_total")


def _gauge(name: str, doc: str, samples) -> Metric:
    return _family(name, doc, "gauge", samples)
