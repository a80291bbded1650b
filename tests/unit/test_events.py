"""Slow-packet events: receive context read off real stack shapes, the
diagnosis chosen from the evidence, the seed's text record."""

import dataclasses

import pytest

from ovslat.model.events import SlowEvent, as_dict, diagnose, receive_context
from ovslat.output import text as text_out

BACKLOG = (
    "__netif_receive_skb+0x1",
    "process_backlog+0xa5",
    "__napi_poll+0x31",
    "net_rx_action+0x123",
    "handle_softirqs+0xcd",
)
STACKS = {
    "ksoftirqd": BACKLOG + ("run_ksoftirqd+0x2a", "smpboot_thread_fn+0x14c", "kthread+0x112"),
    "irq": BACKLOG + ("__irq_exit_rcu+0x4a", "sysvec_call_function_single+0x9e"),
    "bh": BACKLOG
    + ("do_softirq.part.0+0x3b", "__local_bh_enable_ip+0x64", "__dev_queue_xmit+0x34c"),
}


def event(**kw):
    base = dict(
        number=1,
        wall_s=1700000000.25,
        interface="eth0",
        latency_ns=8_456_000,
        threshold_ns=5_000_000,
        protocol="TCP",
        src="198.18.0.2",
        dst="198.18.0.1",
        sport=45678,
        dport=2181,
        enqueue_cpu=2,
        receive_cpu=2,
        ts_enqueue_ns=1_000,
        ts_receive_ns=8_457_000,
        queue_depth=3,
        task="stress",
        pid=42,
        stack=STACKS["irq"],
    )
    base.update(kw)
    return SlowEvent(**base)


@pytest.mark.parametrize(
    "stack, task, expected",
    [
        ("ksoftirqd", "ksoftirqd/2", "ksoftirqd (ksoftirqd/2)"),
        ("irq", "stress", "softirq on irq exit (interrupting stress)"),
        ("bh", "iperf3", "softirq at local_bh_enable in process context (iperf3)"),
    ],
)
def test_receive_context(stack, task, expected):
    assert receive_context(STACKS[stack], task) == expected


def test_diagnosis_follows_the_evidence():
    assert diagnose(event(stack=STACKS["ksoftirqd"], task="ksoftirqd/2")).startswith(
        "ksoftirqd scheduling delay: CPU 2's backlog waited 8456us"
    )
    assert diagnose(event(queue_depth=128)).startswith("queue depth build-up: 128 packets")
    assert diagnose(event(enqueue_cpu=1)).startswith(
        "cross-CPU migration: RPS steered the packet from CPU 1 to CPU 2"
    )
    assert diagnose(event()).startswith("CPU contention: softirq on CPU 2 ran 8456us")


def test_seed_text_record():
    text = text_out.event(event(enqueue_cpu=4, queue_depth=None))
    lines = text.splitlines()
    for line in (
        "HIGH LATENCY EVENT #1",
        "Latency: 8.456 ms (threshold: 5.000 ms)",
        "  Protocol: TCP",
        "  Source: 198.18.0.2:45678",
        "  Destination: 198.18.0.1:2181",
        "  Enqueue CPU: 4",
        "  Receive CPU: 2",
        "  ^^^ CROSS-CPU MIGRATION DETECTED ^^^",
        "  Queue depth: not sampled",
        "Kernel Stack Trace:",
        "  __netif_receive_skb+0x1",
        "  process_backlog+0xa5",
    ):
        assert line in lines, line
    assert "Receive context: softirq on irq exit (interrupting stress)" in lines


def test_json_event():
    d = as_dict(dataclasses.replace(event(), protocol="ICMP", sport=None, dport=None))
    assert d["type"] == "event" and d["latency_us"] == 8456.0 and d["sport"] is None
    assert d["stack"][1] == "process_backlog+0xa5" and d["cross_cpu"] is False


@pytest.mark.parametrize(
    "family, src, dst",
    [(4, "198.18.0.2", "198.18.0.1"), (6, "2001:2::2", "2001:2:0:71::1")],
)
def test_a_raw_event_of_either_family(family, src, dst):
    """struct slow_event as bcc hands it over: pkt_id's addresses are four
    little-endian words of network-order bytes, IPv4 in the first."""
    import ipaddress
    import socket

    from ovslat import abi
    from ovslat.model.events import from_raw

    raw = abi.SlowEvent()
    for field, addr in (("saddr", src), ("daddr", dst)):
        packed = ipaddress.ip_address(addr).packed.ljust(16, b"\0")
        words = getattr(raw.id, field)
        for i in range(4):
            words[i] = int.from_bytes(packed[4 * i : 4 * i + 4], "little")
    raw.id.family, raw.id.proto = family, socket.IPPROTO_UDP
    raw.sport, raw.dport, raw.ts_enqueue_ns, raw.ts_receive_ns = 40000, 31337, 10, 5010
    ev = from_raw(raw, [], 1, 0.0, "eth0", 1000)
    assert (ev.src, ev.dst, ev.protocol, ev.dport, ev.latency_ns) == (src, dst, "UDP", 31337, 5000)
    assert ev.tunnel is None and as_dict(ev)["tunnel"] is None


def test_a_tunnelled_packets_event_keeps_its_outer_headers():
    """src..dport are the inner packet's; the tunnel, its VNI and the outer
    addresses and ports in `tunnel`, in JSON, back from it and in the text."""
    import ipaddress
    import socket

    from ovslat import abi
    from ovslat.model.events import from_dict, from_raw
    from ovslat.output import text as text_out

    raw = abi.SlowEvent()
    for struct, field, addr in (
        (raw.id, "saddr", "198.18.71.3"),
        (raw.id, "daddr", "198.18.71.10"),
        (raw.outer, "saddr", "198.18.70.2"),
        (raw.outer, "daddr", "198.18.70.1"),
    ):
        getattr(struct, field)[0] = int.from_bytes(ipaddress.ip_address(addr).packed, "little")
    raw.id.family = raw.outer.family = 4
    raw.id.proto = socket.IPPROTO_UDP
    raw.sport, raw.dport, raw.ts_enqueue_ns, raw.ts_receive_ns = 40001, 31400, 10, 5010
    raw.outer.tunnel = abi.TunnelType.GENEVE << abi.TUNNEL_TYPE_SHIFT | 200
    raw.outer.sport, raw.outer.dport = 51234, 6081
    ev = from_raw(raw, [], 1, 0.0, "ovt-ule", 1000)
    assert (ev.src, ev.dst, ev.dport) == ("198.18.71.3", "198.18.71.10", 31400)
    want = {
        "type": "geneve",
        "vni": 200,
        "src": "198.18.70.2",
        "sport": 51234,
        "dst": "198.18.70.1",
        "dport": 6081,
    }
    assert ev.tunnel == want and as_dict(ev)["tunnel"] == want
    assert from_dict(as_dict(ev)).tunnel == want
    text = text_out.event(ev)
    assert "  Tunnel: geneve vni 200, outer 198.18.70.2:51234 -> 198.18.70.1:6081" in text
