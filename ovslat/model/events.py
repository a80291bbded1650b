"""Slow-packet events (threshold mode): what the seed's threshold tool shows,
plus where the packet was received and a one-line diagnosis drawn from the
evidence in the event. Pure: raw fields and a symbolized stack in."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from ovslat.abi import THRESHOLD_STAGES, ThresholdStage, tunnel_of

PROTOCOL_NAMES = {
    socket.IPPROTO_TCP: "TCP",
    socket.IPPROTO_UDP: "UDP",
    socket.IPPROTO_ICMP: "ICMP",
    socket.IPPROTO_ICMPV6: "ICMPv6",
}
QUEUE_BUILDUP = 32  # packets ahead in the backlog that point at arrivals outrunning softirq
NOT_SAMPLED = 0xFFFFFFFF


@dataclass(frozen=True)
class SlowEvent:
    number: int
    wall_s: float
    interface: str
    latency_ns: int
    threshold_ns: int
    protocol: str
    src: str
    dst: str
    sport: int | None
    dport: int | None
    enqueue_cpu: int
    receive_cpu: int
    ts_enqueue_ns: int
    ts_receive_ns: int
    queue_depth: int | None
    task: str
    pid: int
    stack: tuple[str, ...]
    stage: str = "enqueue_to_receive"  # or "transit", "receive_to_ip"
    from_interface: str | None = None  # transit: where the packet came from
    # a VXLAN / Geneve packet's tunnel and outer headers (src..dport are the inner packet's)
    tunnel: dict | None = None

    @property
    def cross_cpu(self) -> bool:
        return self.enqueue_cpu != self.receive_cpu

    @property
    def context(self) -> str:
        return receive_context(self.stack, self.task)

    @property
    def diagnosis(self) -> str:
        return diagnose(self)


def _ip(words, family: int) -> str:
    """struct pkt_id's address (4 little-endian words holding the network-order
    bytes; IPv4 in the first)."""
    raw = b"".join(int(w).to_bytes(4, "little") for w in words)
    if family == 6:
        return str(ipaddress.IPv6Address(raw))
    return str(ipaddress.IPv4Address(raw[:4]))


def from_raw(
    raw,
    stack: list[str],
    number: int,
    wall_s: float,
    interface: str,
    threshold_ns: int,
    from_interface: str | None = None,
) -> SlowEvent:
    """From struct slow_event (bpf/ovslat.h) as bcc decodes it."""
    proto = raw.id.proto
    ports = proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP)
    return SlowEvent(
        number=number,
        wall_s=wall_s,
        interface=interface,
        latency_ns=raw.ts_receive_ns - raw.ts_enqueue_ns,
        threshold_ns=threshold_ns,
        protocol=PROTOCOL_NAMES.get(proto, str(proto)),
        src=_ip(raw.id.saddr, raw.id.family),
        dst=_ip(raw.id.daddr, raw.id.family),
        sport=raw.sport if ports else None,
        dport=raw.dport if ports else None,
        enqueue_cpu=raw.enqueue_cpu,
        receive_cpu=raw.receive_cpu,
        ts_enqueue_ns=raw.ts_enqueue_ns,
        ts_receive_ns=raw.ts_receive_ns,
        queue_depth=None if raw.queue_depth == NOT_SAMPLED else raw.queue_depth,
        task=raw.comm.decode(errors="replace"),
        pid=raw.pid,
        stack=tuple(stack),
        stage=THRESHOLD_STAGES[raw.stage],
        from_interface=from_interface if raw.stage == ThresholdStage.TRANSIT else None,
        tunnel=_tunnel(raw.outer),
    )


def _tunnel(outer) -> dict | None:
    t = tunnel_of(outer.tunnel)
    if t is None:
        return None
    return {
        "type": t[0],
        "vni": t[1],
        "src": _ip(outer.saddr, outer.family),
        "sport": outer.sport,
        "dst": _ip(outer.daddr, outer.family),
        "dport": outer.dport,
    }


def _functions(stack: tuple[str, ...]) -> list[str]:
    return [frame.split("+")[0] for frame in stack]


def receive_context(stack: tuple[str, ...], task: str) -> str:
    """Who ran the backlog's softirq, read off the kernel stack."""
    fns = _functions(stack)
    if "run_ksoftirqd" in fns or task.startswith("ksoftirqd/"):
        return f"ksoftirqd ({task})"
    if task.startswith("napi/") or "napi_threaded_poll" in fns:
        return f"threaded NAPI ({task})"
    if any(f in ("irq_exit_rcu", "__irq_exit_rcu", "irq_exit") for f in fns):
        return f"softirq on irq exit (interrupting {task})"
    if any(f in ("__local_bh_enable_ip", "local_bh_enable", "do_softirq") for f in fns):
        return f"softirq at local_bh_enable in process context ({task})"
    return f"process context ({task})"


def diagnose(ev: SlowEvent) -> str:
    """The seed's "Diagnosing High Latency" list, applied to this event's evidence."""
    us = ev.latency_ns / 1000
    if ev.stage == "transit":
        return (
            f"slow transit: {us:.0f}us from S2 on {ev.from_interface} to S1 on "
            f"{ev.interface} (the path between them, e.g. the OVS datapath: a flow miss "
            "upcall to ovs-vswitchd, or the userspace datapath's threads); see the stack"
        )
    if ev.stage == "receive_to_ip":
        return (
            f"slow receive -> IP: {us:.0f}us inside __netif_receive_skb before ip_rcv on "
            f"CPU {ev.receive_cpu} (a tc ingress program, a packet tap or the CPU taken by "
            "interrupts in between); see the stack"
        )
    if "ksoftirqd" in ev.context:
        return (
            f"ksoftirqd scheduling delay: CPU {ev.receive_cpu}'s backlog waited {us:.0f}us "
            "for ksoftirqd to run; check `perf sched latency`, CPU affinity and ksoftirqd "
            "priority"
        )
    if ev.queue_depth is not None and ev.queue_depth >= QUEUE_BUILDUP:
        return (
            f"queue depth build-up: {ev.queue_depth} packets ahead in the backlog; softirq "
            "is slower than arrivals: raise net.core.netdev_budget, check CPU saturation"
        )
    if ev.cross_cpu:
        return (
            f"cross-CPU migration: RPS steered the packet from CPU {ev.enqueue_cpu} to CPU "
            f"{ev.receive_cpu}, whose softirq ran {us:.0f}us later; check RPS masks and "
            "load on that CPU"
        )
    return (
        f"CPU contention: softirq on CPU {ev.receive_cpu} ran {us:.0f}us after the enqueue, "
        f"while '{ev.task}' was running; reduce load or isolate CPUs for networking"
    )


def as_dict(ev: SlowEvent) -> dict:
    return {
        "type": "event",
        "number": ev.number,
        "wall_s": round(ev.wall_s, 6),
        "interface": ev.interface,
        "latency_us": round(ev.latency_ns / 1000, 3),
        "threshold_us": round(ev.threshold_ns / 1000, 3),
        "protocol": ev.protocol,
        "src": ev.src,
        "sport": ev.sport,
        "dst": ev.dst,
        "dport": ev.dport,
        "enqueue_cpu": ev.enqueue_cpu,
        "receive_cpu": ev.receive_cpu,
        "cross_cpu": ev.cross_cpu,
        "ts_enqueue_ns": ev.ts_enqueue_ns,
        "ts_receive_ns": ev.ts_receive_ns,
        "queue_depth": ev.queue_depth,
        "context": ev.context,
        "task": ev.task,
        "pid": ev.pid,
        "diagnosis": ev.diagnosis,
        "stack": list(ev.stack),
        "stage": ev.stage,
        "from_interface": ev.from_interface,
        "tunnel": ev.tunnel,
    }


def from_dict(d: dict) -> SlowEvent:
    """An event as as_dict() wrote it (a saved run's JSON lines)."""
    return SlowEvent(
        number=d["number"],
        wall_s=d["wall_s"],
        interface=d["interface"],
        latency_ns=d["ts_receive_ns"] - d["ts_enqueue_ns"],
        threshold_ns=round(d["threshold_us"] * 1000),
        protocol=d["protocol"],
        src=d["src"],
        dst=d["dst"],
        sport=d["sport"],
        dport=d["dport"],
        enqueue_cpu=d["enqueue_cpu"],
        receive_cpu=d["receive_cpu"],
        ts_enqueue_ns=d["ts_enqueue_ns"],
        ts_receive_ns=d["ts_receive_ns"],
        queue_depth=d["queue_depth"],
        task=d["task"],
        pid=d["pid"],
        stack=tuple(d["stack"]),
        stage=d.get("stage", "enqueue_to_receive"),
        from_interface=d.get("from_interface"),
        tunnel=d.get("tunnel"),
    )
