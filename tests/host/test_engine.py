"""The core engine on this host's kernel (tracepoint backend): real packets
through real namespaces, veths and an OVS bridge, counted exactly."""

from __future__ import annotations

import contextlib
import signal
import subprocess

import pytest

from ovslat.scenario import testbed
from tests.host.conftest import kernel_has_kprobes
from tests.ovslat_proc import (
    REPO,
    Watch,
    interface,
    ovslat_prog_ids,
    ovslat_progs,
    programs_left,
    run_ovslat,
)

UDP_PORT, OTHER_UDP_PORT, TCP_PORT = 5001, 5003, 5002


@pytest.fixture
def host_a():
    """A test host in its own netns, wired to this namespace by a veth."""
    with testbed.Netns("a") as ns:
        link = testbed.veth("ovt-a0", ns, "ovt-a1", "198.18.10.1", "198.18.10.2")
        # Resolve ARP before measuring: the exchange is not IPv4 and would not
        # count, but the first packet's wait for it would inflate latencies.
        testbed.ping(ns, "198.18.10.1", 1)
        yield ns, link


def send_mix(ns, dst):
    """300 UDP to UDP_PORT, 100 UDP to OTHER_UDP_PORT, 40 TCP SYNs, 60 pings."""
    testbed.send_udp(ns, dst, UDP_PORT, 300)
    testbed.send_udp(ns, dst, OTHER_UDP_PORT, 100)
    testbed.send_tcp_syn(ns, dst, TCP_PORT, 40)
    assert testbed.ping(ns, dst, 60) == 60


def exact(w: Watch, name: str, n: int) -> dict:
    """Wait until n packets went all the way through, stop, and check the
    whole run's summary: exactly n at every stage, nothing lost."""
    w.wait_for(lambda w: w.totals(name).get("ip_rcv", 0) >= n)
    summary = w.stop()
    i = interface(summary, name)
    assert i["counters"] == {
        "enqueued": n,
        "received": n,
        "received_sync": 0,
        "segments": n,
        "ip_rcv": n,
        "cross_cpu": 0,
        "parse_failures": 0,
        "flow_lookup_failures": 0,
        "slow": 0,
        "events_suppressed": 0,
        "dropped": 0,
        "hops_lost": 0,
        "encapsulated": 0,
    }, i["counters"]
    assert i["stages"]["enqueue_to_receive"]["count"] == n
    assert i["stages"]["receive_to_ip"]["count"] == n
    return i


@pytest.mark.parametrize(
    "filters, expected",
    [
        (["--protocol", "udp", "--dst-port", str(UDP_PORT)], 300),
        (["--protocol", "udp"], 400),
        (["--protocol", "tcp", "--dst-port", str(TCP_PORT)], 40),
        (["--protocol", "icmp"], 60),
        ([], 500),
    ],
    ids=["udp-port", "udp", "tcp", "icmp", "all"],
)
def test_exact_counts_per_protocol(host_a, filters, expected, auto_backend):
    ns, _ = host_a
    with Watch(["-i", "ovt-a0", *filters]) as w:
        assert w.start["backend"] == auto_backend
        send_mix(ns, "198.18.10.1")
        i = exact(w, "ovt-a0", expected)
    e2r = i["stages"]["enqueue_to_receive"]
    assert 0 < e2r["p50_us"] <= e2r["p99_us"] <= e2r["max_us"] < 1_000_000
    assert sum(b["count"] for b in e2r["buckets"]) == expected


@pytest.mark.parametrize("tp_btf", ["1", "0"], ids=["tp_btf", "raw_tracepoint"])
def test_tracepoint_programs_typed_or_raw(host_a, tp_btf):
    """The tracepoint backend's programs as tp_btf (typed field loads, the
    default where the kernel's BTF has its tracepoints) and as the raw
    tracepoints it falls back to (OVSLAT_TP_BTF=0, or a kernel refusing
    tp_btf): both count the same packets exactly."""
    ns, _ = host_a
    before = ovslat_prog_ids()
    with Watch(["-i", "ovt-a0", "--attach", "tracepoint"], env={"OVSLAT_TP_BTF": tp_btf}) as w:
        # (the kernel keeps 15 characters of a name; bpftool shows BTF's whole one)
        progs = {p["name"][:15]: p["type"] for i, p in ovslat_progs().items() if i not in before}
        send_mix(ns, "198.18.10.1")
        exact(w, "ovt-a0", 500)
    want = "tracing" if tp_btf == "1" else "raw_tracepoint"
    # S1, S2, the calls' entry and exit, the drop hook
    for name in (
        "tp_netif_rx",
        "tp_receive",
        "tp_receive_entr",
        "tp_receive_exit",
        "drop_kfree_skb",
    ):
        assert progs.get(name) == want, progs


def test_address_and_source_port_filters(host_a):
    ns, _ = host_a
    subprocess.run(["ip", "addr", "add", "198.18.10.4/24", "dev", "ovt-a0"], check=True)
    with Watch(
        [
            "-i",
            "ovt-a0",
            "--dst-ip",
            "198.18.10.4",
            "--src-ip",
            "198.18.10.2",
            "--src-port",
            "40001",
        ]
    ) as w:
        testbed.send_udp(ns, "198.18.10.4", UDP_PORT, 70, src_port=40001)
        testbed.send_udp(ns, "198.18.10.4", UDP_PORT, 50, src_port=40002)  # other source port
        testbed.send_udp(ns, "198.18.10.1", UDP_PORT, 50, src_port=40001)  # other address
        exact(w, "ovt-a0", 70)


def test_two_interfaces_one_program():
    with testbed.Netns("b") as nb, testbed.Netns("c") as nc:
        testbed.veth("ovt-b0", nb, "ovt-b1", "198.18.11.1", "198.18.11.2")
        testbed.veth("ovt-c0", nc, "ovt-c1", "198.18.12.1", "198.18.12.2")
        testbed.ping(nb, "198.18.11.1", 1)
        testbed.ping(nc, "198.18.12.1", 1)
        with Watch(["-i", "ovt-b0", "-i", "ovt-c0", "--protocol", "udp"]) as w:
            testbed.send_udp(nb, "198.18.11.1", UDP_PORT, 200)
            testbed.send_udp(nc, "198.18.12.1", UDP_PORT, 120)
            w.wait_for(
                lambda w: w.totals("ovt-b0").get("ip_rcv", 0) >= 200
                and w.totals("ovt-c0").get("ip_rcv", 0) >= 120
            )
            summary = w.stop()
        # one process, one program: both interfaces in every record
        assert [i["name"] for i in summary["interfaces"]] == ["ovt-b0", "ovt-c0"]
        assert interface(summary, "ovt-b0")["counters"]["enqueued"] == 200
        assert interface(summary, "ovt-c0")["counters"]["enqueued"] == 120
        assert interface(summary, "ovt-b0")["counters"]["ip_rcv"] == 200
        assert interface(summary, "ovt-c0")["counters"]["ip_rcv"] == 120


def test_interface_in_another_namespace(host_a):
    """IFACE@NETNS: the netns-aware key tells apart two interfaces that could
    share an ifindex; traffic received inside the namespace is measured there."""
    ns, _ = host_a
    with Watch(["-i", f"ovt-a1@{ns.name}", "--protocol", "icmp"]) as w:
        # replies to pings *from* this namespace arrive on ovt-a1 inside it
        assert testbed.ping(ns, "198.18.10.1", 25) == 25
        exact(w, "ovt-a1", 25)


def test_rps_cross_cpu(host_a):
    """RPS steers every packet from CPU 0 (where the sender runs) to CPU 1's
    backlog: each one is a cross-CPU migration. The tracepoint backend cannot
    see the target CPU at netif_rx, so it samples no queue depth rather than
    the wrong CPU's."""
    ns, _ = host_a
    args = ["-i", "ovt-a0", "--protocol", "udp", "--attach", "tracepoint"]
    with testbed.rps("ovt-a0", "2"), Watch(args) as w:
        testbed.send_udp(ns, "198.18.10.1", UDP_PORT, 300, cpu=0)
        w.wait_for(lambda w: w.totals("ovt-a0").get("ip_rcv", 0) >= 300)
        i = interface(w.stop(), "ovt-a0")
    c = i["counters"]
    assert c["enqueued"] == c["received"] == c["ip_rcv"] == 300
    assert c["cross_cpu"] == 300
    assert i["queue_depth"]["samples"] == 0 and i["queue_depth"]["avg"] is None


@pytest.mark.parametrize("rps", [True, False], ids=["rps", "no-rps"])
def test_ovs_netdev_bridge(rps):
    """An OVS bridge (netdev datapath): the veth uplink always enqueues
    (veth_xmit -> netif_rx); the bridge's tap port receives synchronously
    through netif_receive_skb() unless RPS is on, which the tracepoint backend
    must tell apart."""
    with testbed.OvsDaemons("netdev") as ovs, testbed.Netns("d") as nd:
        br = ovs.add_bridge("ovt-br")
        up = testbed.veth("ovt-up0", nd, "ovt-up1", None, "198.18.13.2")
        ovs.add_port(br, up.root, testbed.AS_UPLINK)
        testbed.address_port(br, "198.18.13.1")
        assert testbed.ping(nd, "198.18.13.1", 3) == 3  # ARP + flows learnt
        ctx = testbed.rps(br, "3") if rps else contextlib.nullcontext()
        args = ["-i", "ovt-up0", "-i", br, "--protocol", "icmp", "--attach", "tracepoint"]
        with ctx, Watch(args) as w:
            assert testbed.ping(nd, "198.18.13.1", 50) == 50
            w.wait_for(
                lambda w: w.totals("ovt-up0").get("received", 0) >= 50
                and (w.totals(br).get("enqueued", 0) >= 50 or w.totals(br).get("ip_rcv", 0) >= 50)
            )
            if rps:  # S2/S3 follow at once, but for what the tap-RPS limit hides
                w.settle(lambda w: w.totals(br).get("ip_rcv", 0) >= 50, timeout_s=3)
            summary = w.stop()
    uplink, bridge = interface(summary, "ovt-up0"), interface(summary, br)
    assert uplink["counters"]["enqueued"] == uplink["counters"]["received"] == 50
    # The uplink's packets are addressed to the bridge port's MAC: ip_rcv()
    # drops them as PACKET_OTHERHOST before the netfilter hook (S3 here).
    assert uplink["counters"]["ip_rcv"] == 0
    if rps:
        c = bridge["counters"]
        assert c["enqueued"] == 50 and c["flow_lookup_failures"] == 0
        # received exactly, except what README's tap-RPS limit hides from S2:
        # that stays in flight, accounted for, never a latency
        assert c["received"] == c["ip_rcv"] >= 48
        assert bridge["in_flight"] == 50 - c["received"]
    else:
        # received in place by the tap (tun_get_user -> netif_receive_skb):
        # no S1 -> S2, but S2 -> S3 and ip_rcv for every packet
        c = bridge["counters"]
        assert c["enqueued"] == c["received"] == c["flow_lookup_failures"] == 0
        assert c["received_sync"] == c["ip_rcv"] == 50
        assert bridge["stages"]["receive_to_ip"]["count"] == 50
        assert bridge["stages"]["enqueue_to_receive"]["count"] == 0


def test_debug_counters(host_a):
    ns, _ = host_a
    with Watch(["-i", "ovt-a0", "--debug", "--protocol", "udp", "--dst-port", str(UDP_PORT)]) as w:
        testbed.send_udp(ns, "198.18.10.1", UDP_PORT, 80)
        testbed.send_udp(ns, "198.18.10.1", OTHER_UDP_PORT, 30)
        testbed.send_tcp_syn(ns, "198.18.10.1", TCP_PORT, 10)
        w.wait_for(lambda w: w.totals("ovt-a0").get("ip_rcv", 0) >= 80)
        summary = w.stop()
    d = interface(summary, "ovt-a0")["debug"]
    s1, s2, s3 = (
        d[k] for k in ("STAGE1_enqueue_to_backlog", "STAGE2___netif_receive_skb", "STAGE3_ip_rcv")
    )
    assert s1["HANDLE_ENTRY"] == s1["PARSE_SUCCESS"] == 120
    assert s1["PORT_FILTER"] == 30 and s1["PROTO_FILTER"] == 10 and s1["IP_FILTER"] == 0
    assert s1["FLOW_CREATE"] == 80
    assert s2["FLOW_LOOKUP"] == s2["FLOW_FOUND"] == s2["LATENCY_SUBMIT"] == 80
    assert s3["LATENCY_SUBMIT"] == 80
    assert summary["probe_entries"]["STAGE1_enqueue_to_backlog"] >= 120


@pytest.mark.parametrize("how", ["duration", "sigint", "sigterm"])
def test_clean_exit_detaches_everything(host_a, how):
    ns, _ = host_a
    before = ovslat_prog_ids()
    args = ["-i", "ovt-a0"] + (["--duration", "1.5"] if how == "duration" else [])
    with Watch(args) as w:
        assert len(ovslat_prog_ids() - before) >= 4  # S1, S2, S3 hooks + kfree_skb
        testbed.send_udp(ns, "198.18.10.1", UDP_PORT, 20)
        if how == "duration":
            while w.summary is None:
                w._next(10, "summary")
            assert w.proc.wait(timeout=10) == 0
            summary = w.summary
        else:
            w.wait_for(lambda w: w.totals("ovt-a0").get("ip_rcv", 0) >= 20)
            summary = w.stop(signal.SIGINT if how == "sigint" else signal.SIGTERM)
    assert interface(summary, "ovt-a0")["counters"]["enqueued"] == 20
    assert programs_left(before) == set()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--attach", "kprobe"],
            "--attach kprobe is not usable on this kernel (kprobe: kernel "
            "built without CONFIG_KPROBES)",
        ),
        (["--attach", "fentry"], "--attach fentry is not usable on this kernel"),
    ],
)
def test_backend_missing_is_one_line(args, message, auto_backend):
    if args[1] == "kprobe" and kernel_has_kprobes():
        pytest.skip("this kernel has kprobes")
    if args[1] == "fentry" and auto_backend == "fentry":  # auto tries fentry first
        pytest.skip("this kernel attaches fentry")
    r = run_ovslat(["watch", "-i", "lo", "--duration", "1", *args])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_unknown_interface_is_one_line():
    r = run_ovslat(["watch", "-i", "ovt-nope0"])
    assert r.returncode == 2
    assert r.stderr == (
        "ovslat: error: unknown interface 'ovt-nope0': check the name with " "`ip link show`\n"
    )


def test_kprobe_program_passes_the_verifier_here():
    """kprobes cannot attach on this kernel, but the kprobe variant must still
    compile against BTF offsets and load: the lab attaches it for real."""
    from ovslat.engine.kernel import KernelInfo
    from ovslat.engine.program import EngineOptions, compile_only

    names = compile_only(KernelInfo.probe(), "kprobe", EngineOptions(debug=True))
    assert names == [
        "kprobe_enqueue",
        "kprobe_receive",
        "kprobe_ip",
        "kprobe_ip_list",
        "kprobe_ipv6",
        "kprobe_ipv6_list",
    ]


_BCC_LAYOUT = """
import ctypes, json, sys
from bcc import BPF
from ovslat.engine.kernel import KernelInfo
from ovslat.engine.program import SOURCE, EngineOptions, cflags

def layout(t):
    fields = [f[0] for f in getattr(t, "_fields_", ()) if not f[0].startswith("__pad")]
    return [ctypes.sizeof(t), [[f, getattr(t, f).offset] for f in fields]]

b = BPF(src_file=str(SOURCE).encode(), cflags=cflags(KernelInfo.probe(), "kprobe", EngineOptions()))
out = {}
for name in sys.argv[1:]:
    t = b[name.encode()]
    # per-CPU tables: Leaf is the array of every CPU's value, sLeaf one value
    out[name] = [layout(t.Key), layout(getattr(t, "sLeaf", t.Leaf))]
b.cleanup()
print(json.dumps(out))
"""


def test_bcc_compiles_the_abi_of_abi_py():
    """The maps' key and value types bcc derives from the C are the ctypes
    mirrors of ovslat/abi.py, field by field and byte for byte, as compiled
    for this kernel (tests/unit/test_abi.py holds the header text). In a
    process of its own, which takes the programs it loads with it."""
    import ctypes
    import json
    import sys

    from ovslat import abi

    def layout(t):
        return [ctypes.sizeof(t), [[f[0], getattr(t, f[0]).offset] for f in t._fields_]]

    maps = {
        "ifaces": (abi.IfaceKey, abi.IfaceVal),
        "config": (None, abi.Config),
        "counters": (None, abi.Counters),
        "hists": (None, abi.Hist),
        "maxima": (None, abi.Maxima),
        "flows": (None, abi.Flow),
        "hop_marks": (None, abi.HopEntry),
        "hop_hists": (abi.HopKey, abi.Hist),
        "drops": (abi.DropKey, None),
    }
    r = subprocess.run(
        [sys.executable, "-c", _BCC_LAYOUT, *maps],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    compiled = json.loads(r.stdout.splitlines()[-1])
    for name, (key, leaf) in maps.items():
        for theirs, ours in zip(compiled[name], (key, leaf), strict=True):
            if ours is not None:
                assert theirs == layout(ours), name


_BATCHED_READS = """
import json, sys
from ovslat.discovery.netlink import resolve_all
from ovslat.engine.collector import Collector
from ovslat.engine.kernel import KernelInfo
from ovslat.engine.program import EngineOptions, open_program

p = open_program(KernelInfo.probe(), EngineOptions(backend="tracepoint"))
c = Collector(p, resolve_all(sys.argv[1:]))
c.read()
print("ready", flush=True)
while sys.stdin.readline():  # one interval per line the test writes
    snap = c.read()
    n = len(c.interfaces)
    single = [bytes(p._counters.getvalue(p._counters.Key(i))) for i in range(n)]
    batched, p._batch = p._batch, False  # the fallback, key by key
    fallback = p.read_counter_bytes(n)
    p._batch = batched
    print(json.dumps({
        "batched": batched,
        "same": p.read_counter_bytes(n) == single,
        "fallback_same": fallback == single,
        "counts": {st.iface.name: [st.counters.enqueued, st.counters.received,
                                   st.counters.ip_rcv, st.stages["enqueue_to_receive"].count]
                   for st in snap.interfaces},
        "idle": [st.iface.name for st in snap.interfaces if st.idle],
    }), flush=True)
p.close()
"""


def udp_no_ports() -> int:
    """UDP datagrams this namespace received for a port nobody listens on:
    past ip_rcv, so every stage has counted them."""
    with open("/proc/net/snmp") as f:
        lines = [ln.split() for ln in f if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def test_batched_reads_are_the_per_slot_reads():
    """The collector reads every slot's counters in one BPF_MAP_LOOKUP_BATCH
    and reuses an idle interface's interval: the batch holds byte for byte
    what key-by-key lookups read, a busy interface's interval is exact, and
    an interface that saw nothing is handed out as idle (no parse, no
    histogram read), interval after interval, until it counts again."""
    import json
    import sys

    with testbed.Netns("b") as nb, testbed.Netns("c") as nc:
        testbed.veth("ovt-b0", nb, "ovt-b1", "198.18.11.1", "198.18.11.2")
        testbed.veth("ovt-c0", nc, "ovt-c1", "198.18.12.1", "198.18.12.2")
        testbed.ping(nb, "198.18.11.1", 1)
        testbed.ping(nc, "198.18.12.1", 1)
        proc = subprocess.Popen(
            [sys.executable, "-c", _BATCHED_READS, "ovt-b0", "ovt-c0"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"

            def interval() -> dict:
                proc.stdin.write("\n")
                proc.stdin.flush()
                return json.loads(proc.stdout.readline())

            base = udp_no_ports()
            testbed.send_udp(nb, "198.18.11.1", UDP_PORT, 120)
            testbed.wait_until(lambda: udp_no_ports() >= base + 120, 10)
            first = interval()
            second = interval()
            base = udp_no_ports()
            testbed.send_udp(nc, "198.18.12.1", UDP_PORT, 80)
            testbed.wait_until(lambda: udp_no_ports() >= base + 80, 10)
            third = interval()
        finally:
            proc.stdin.close()
            assert proc.wait(timeout=60) == 0
        assert [r["batched"] for r in (first, second, third)] == [True] * 3
        assert [r["same"] for r in (first, second, third)] == [True] * 3
        assert [r["fallback_same"] for r in (first, second, third)] == [True] * 3
        assert first["counts"] == {"ovt-b0": [120] * 4, "ovt-c0": [0] * 4}
        assert first["idle"] == ["ovt-c0"]
        assert second["counts"] == {"ovt-b0": [0] * 4, "ovt-c0": [0] * 4}
        assert second["idle"] == ["ovt-b0", "ovt-c0"]
        assert third["counts"] == {"ovt-b0": [0] * 4, "ovt-c0": [80] * 4}
        assert third["idle"] == ["ovt-b0"]
