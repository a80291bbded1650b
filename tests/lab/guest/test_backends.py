"""Runs inside the kernel lab (Debian's stock kernel under qemu), started by
tests/lab/test_lab.py: the kprobe and fentry backends and the OVS kernel
datapath, for real, with exact packet counts."""

from __future__ import annotations

import pytest

from ovslat.scenario import testbed
from tests.lab.guest import HAS_DROP_REASONS, HAS_NETFILTER_LINK, record
from tests.ovslat_proc import Watch, interface

UDP_PORT = 7001


@pytest.fixture
def host_a():
    with testbed.Netns("a") as ns:
        testbed.veth("ovt-a0", ns, "ovt-a1", "198.18.30.1", "198.18.30.2")
        assert testbed.ping(ns, "198.18.30.1", 1) == 1
        yield ns


@pytest.fixture
def nics():
    """Two NIC-like receivers (testbed.nic_like: NAPI + GRO), eth0 in each
    namespace: the first without RPS (the default), the second with RPS to
    CPU 3."""
    with testbed.Netns("na") as na, testbed.Netns("nb") as nb:
        testbed.veth("ovt-na0", na, "eth0", "198.18.36.1", "198.18.36.2")
        testbed.veth("ovt-nb0", nb, "eth0", "198.18.37.1", "198.18.37.2")
        testbed.nic_like("eth0", na.name)
        testbed.nic_like("eth0", nb.name)
        with testbed.rps("eth0", "8", nb):
            yield na, nb


@pytest.fixture
def host6():
    """A dual-stack namespace: eth0 holds 198.18.38.2 and 2001:2:0:38::2,
    fed from ovt-6a0 here; permanent neighbours, so no ARP or neighbour
    discovery adds packets."""
    with testbed.Netns("v6") as ns:
        testbed.veth("ovt-6a0", ns, "eth0", "198.18.38.1", "198.18.38.2")
        testbed.ipv6("ovt-6a0", "2001:2:0:38::1")
        testbed.ipv6("eth0", "2001:2:0:38::2", ns)
        testbed.neighbour("ovt-6a0", "2001:2:0:38::2", testbed.mac_of("eth0", ns))
        testbed.neighbour("eth0", "2001:2:0:38::1", testbed.mac_of("ovt-6a0"), ns)
        yield ns


@pytest.mark.parametrize(
    "attach, backend", [("kprobe", "kprobe"), ("auto", "fentry"), ("tracepoint", "tracepoint")]
)
def test_exact_counts(host_a, nics, host6, attach, backend):
    """S1 -> S2 -> S3 with each backend; auto picks fentry on these kernels.
    S3 under tracepoints is the netfilter hook, which Linux has from 6.4.
    In the same run two NIC-like receivers, without and with RPS, get UDP
    and a TCP transfer GRO merges: exactly what their kernel's IP layer
    counted (sk_buffs, and the segments in them). And IPv6 (UDP, ICMPv6
    echo, a TCP transfer) beside IPv4 on a dual-stack veth: exactly what the
    kernel's IPv6 layer counted, S3 at ipv6_rcv() (netfilter: IPv6's
    PRE_ROUTING)."""
    s3 = backend != "tracepoint" or HAS_NETFILTER_LINK
    na, nb = nics
    v6name = f"eth0@{host6.name}"
    args = ["-i", "ovt-a0", "-i", f"eth0@{na.name}", "-i", f"eth0@{nb.name}", "-i", v6name]
    with Watch([*args, "--attach", attach], timeout_s=300) as w:
        assert w.start["backend"] == backend
        if backend == "tracepoint":
            assert (w.start["s3"] or "").startswith("IPv4: PRE_ROUTING") == s3, w.start
            # every lab kernel (5.10+) takes the programs as tp_btf
            assert not any("raw tracepoints" in n for n in w.start.get("notes", ())), w.start
        else:
            assert w.start["s3"].startswith("IPv4: ip_rcv() entry")
            assert "IPv6: ipv6_rcv()" in w.start["s3"]
        before6 = testbed.ip6_received(host6), testbed.ip_received(host6)[0]
        testbed.send_udp(None, "2001:2:0:38::2", UDP_PORT, 150)
        testbed.send_udp(None, "198.18.38.2", UDP_PORT, 50)
        assert testbed.ping(None, "2001:2:0:38::2", 20) == 20
        testbed.tcp_transfer(host6, "2001:2:0:38::2", 5002, 300_000)
        v6 = testbed.ip6_received(host6) - before6[0]
        assert testbed.ip_received(host6)[0] - before6[1] == 50
        testbed.send_udp(host_a, "198.18.30.1", UDP_PORT, 200)
        testbed.send_tcp_syn(host_a, "198.18.30.1", UDP_PORT, 20)
        testbed.ping(host_a, "198.18.30.1", 30)
        truth = {}
        for ns, addr in ((na, "198.18.36.2"), (nb, "198.18.37.2")):
            before = testbed.ip_received(ns)
            testbed.send_udp(None, addr, UDP_PORT, 100)
            testbed.tcp_transfer(ns, addr, 5001, 1_000_000)
            after = testbed.ip_received(ns)
            truth[f"eth0@{ns.name}"] = (after[0] - before[0], after[1] - before[1])
        stage = "ip_rcv" if s3 else "received"
        w.wait_for(
            lambda w: w.totals("ovt-a0").get(stage, 0) >= 250
            and all(
                w.totals(n).get("received", 0) + w.totals(n).get("received_sync", 0) >= skbs
                for n, (skbs, _) in truth.items()
            )
            and w.totals(v6name).get(stage, 0) >= v6 + 50,
            timeout_s=120,
        )
        summary = w.stop(timeout_s=120)
    for name, (skbs, segments) in truth.items():
        c = interface(summary, name)["counters"]
        assert segments > skbs + 300, (name, skbs, segments)  # GRO merged TCP
        assert c["segments"] == segments and c["ip_rcv"] == (skbs if s3 else 0), (name, c)
        assert c["flow_lookup_failures"] == c["dropped"] == c["parse_failures"] == 0, (name, c)
        if name.endswith(nb.name):  # RPS: through a backlog (tracepoint: S1 at GRO entry)
            assert c["enqueued"] == c["received"] == skbs and c["received_sync"] == 0, c
        else:  # no RPS: GRO's lists received in place
            assert c["received_sync"] == skbs and c["enqueued"] == c["received"] == 0, c
    i = interface(summary, v6name)
    c = i["counters"]
    assert v6 > 170, v6
    assert c["enqueued"] == c["received"] == v6 + 50 and c["ip_rcv"] == (v6 + 50 if s3 else 0), c
    assert c["flow_lookup_failures"] == c["dropped"] == c["parse_failures"] == 0, c
    assert i["families"]["ipv6"] == {
        "enqueued": v6,
        "received": v6,
        "received_sync": 0,
        "ip_rcv": v6 if s3 else 0,
    }, i["families"]
    assert i["families"]["ipv4"]["received"] == 50
    i = interface(summary, "ovt-a0")
    record(
        {
            "backend": backend,
            "sent": 250,
            "counters": {k: i["counters"][k] for k in ("enqueued", "received", "ip_rcv")},
            "s3": summary["s3"],
            "notes": summary.get("notes", []),
        }
    )
    assert i["counters"] == {
        "enqueued": 250,
        "received": 250,
        "received_sync": 0,
        "segments": 250,
        "ip_rcv": 250 if s3 else 0,
        "cross_cpu": 0,
        "parse_failures": 0,
        "flow_lookup_failures": 0,
        "slow": 0,
        "events_suppressed": 0,
        "dropped": 0,
        "hops_lost": 0,
        "encapsulated": 0,
    }
    assert i["stages"]["enqueue_to_receive"]["count"] == 250
    assert i["stages"]["receive_to_ip"]["count"] == (250 if s3 else 0)
    # the target CPU's real backlog length, once that CPU's softnet_data is known
    assert 240 <= i["queue_depth"]["samples"] <= 250


# fentry on the kernel datapath: test_watch_bridge_kernel_datapath and the
# demo scenario (auto picks it), so each kernel's budget under TCG holds
@pytest.mark.parametrize("attach", ["kprobe", "tracepoint"])
def test_ovs_kernel_datapath(attach):
    """The seed's diagram: the uplink enqueues (veth -> netif_rx), OVS takes the
    packet from its rx_handler (no ip_rcv there) and re-injects it into br-int
    through internal_dev_recv -> netif_rx -> enqueue_to_backlog."""
    with testbed.OvsDaemons("system") as ovs, testbed.Netns("d") as nd:
        ovs.add_bridge("br-int")
        testbed.veth("ovt-up0", nd, "ovt-up1", None, "198.18.31.2")
        ovs.add_port("br-int", "ovt-up0", testbed.AS_UPLINK)
        testbed.address_port("br-int", "198.18.31.1")
        # ARP and datapath flows; under TCG a reply taking the upcall path can
        # come after ping stops waiting, so only the requests are certain
        testbed.ping(nd, "198.18.31.1", 3)
        # every transit is an event: its stack at S1 on br-int is the datapath's path
        with Watch(
            [
                "-i",
                "ovt-up0",
                "-i",
                "br-int",
                "--protocol",
                "icmp",
                "--attach",
                attach,
                "--threshold-us",
                "0",
                "--threshold-stage",
                "transit",
                "--max-events-per-sec",
                "1000",
            ],
            timeout_s=300,
        ) as w:
            testbed.ping(nd, "198.18.31.1", 40)  # 40 requests; replies may be late under TCG
            w.wait_for(
                lambda w: w.totals("br-int").get("received", 0) >= 40
                and w.totals("ovt-up0").get("received", 0) >= 40,
                timeout_s=120,
            )
            summary = w.stop(timeout_s=120)
    up, br = interface(summary, "ovt-up0")["counters"], interface(summary, "br-int")["counters"]
    assert up["enqueued"] == up["received"] == 40
    assert up["ip_rcv"] == 0 and up["flow_lookup_failures"] == 0
    assert br["enqueued"] == br["received"] == 40 and br["flow_lookup_failures"] == 0
    assert len(w.events) == 40
    for ev in w.events:
        assert (ev["from_interface"], ev["interface"]) == ("ovt-up0", "br-int")
        fns = [f.split("+")[0] for f in ev["stack"]]
        # the fast path (ovs_dp_process_packet) or, on a flow miss, the upcall
        # path (ovs_packet_cmd_execute): both execute actions into br-int
        assert "ovs_execute_actions" in fns and "internal_dev_recv" in fns, ev["stack"]
    (h,) = summary["hops"]
    assert (h["from"], h["to"]) == ("ovt-up0", "br-int")
    assert h["count"] == 40  # transit: the time in the OVS kernel datapath
    if attach == "tracepoint" and not HAS_NETFILTER_LINK:
        # below 6.4 no BPF netfilter hook: S3 is not measured, and says so
        assert summary["s3"] is None and br["ip_rcv"] == 0 and h["e2e"]["count"] == 0
        return
    assert br["ip_rcv"] == 40 and h["e2e"]["count"] == 40
    up_st = interface(summary, "ovt-up0")["stages"]
    br_st = interface(summary, "br-int")["stages"]
    assert h["e2e"]["sum_ns"] == (
        up_st["enqueue_to_receive"]["sum_ns"]
        + h["sum_ns"]
        + br_st["enqueue_to_receive"]["sum_ns"]
        + br_st["receive_to_ip"]["sum_ns"]
    )


def test_rps_cross_cpu():
    """Sender pinned to CPU 0. RPS to CPU 3 makes every packet a cross-CPU
    migration; RPS to CPU 0 makes none — exactly what the CPUs say."""
    with testbed.Netns("r") as nr, testbed.Netns("s") as ns_:
        testbed.veth("ovt-r0", nr, "ovt-r1", "198.18.32.1", "198.18.32.2")
        testbed.veth("ovt-s0", ns_, "ovt-s1", "198.18.33.1", "198.18.33.2")
        testbed.ping(nr, "198.18.32.1", 1)
        testbed.ping(ns_, "198.18.33.1", 1)
        with (
            testbed.rps("ovt-r0", "8"),
            testbed.rps("ovt-s0", "1"),
            Watch(
                ["-i", "ovt-r0", "-i", "ovt-s0", "--attach", "kprobe", "--protocol", "udp"],
                timeout_s=300,
            ) as w,
        ):
            # Two batches: CPU 3's softnet_data (for queue depth) is learnt at
            # its first backlog poll, which under TCG comes after a whole burst.
            for batch in (1, 2):
                testbed.send_udp(nr, "198.18.32.1", UDP_PORT, 50, cpu=0)
                testbed.send_udp(ns_, "198.18.33.1", UDP_PORT, 50, cpu=0)
                w.wait_for(
                    lambda w, n=50 * batch: w.totals("ovt-r0").get("ip_rcv", 0) >= n
                    and w.totals("ovt-s0").get("ip_rcv", 0) >= n,
                    timeout_s=120,
                )
            summary = w.stop(timeout_s=120)
    r, s = interface(summary, "ovt-r0"), interface(summary, "ovt-s0")
    assert r["counters"]["enqueued"] == r["counters"]["received"] == 100
    assert r["counters"]["cross_cpu"] == 100
    assert s["counters"]["enqueued"] == s["counters"]["received"] == 100
    assert s["counters"]["cross_cpu"] == 0
    # the real backlog length of the target CPU, sampled once that CPU is known
    assert 50 <= r["queue_depth"]["samples"] <= 100
    assert r["queue_depth"]["avg"] is not None


def test_watch_bridge_kernel_datapath():
    """`ovslat watch br-int` on the kernel datapath: discovery through OVSDB,
    a port added and one deleted mid-run, exact counts per interface."""
    with (
        testbed.OvsDaemons("system") as ovs,
        testbed.Netns("a") as na,
        testbed.Netns("b") as nb,
        testbed.Netns("c") as nc,
    ):
        ovs.add_bridge("br-int")
        testbed.address_port("br-int", "198.18.34.1")
        for ns, name, ip in (
            (na, "ovt-ka", "198.18.34.2"),
            (nb, "ovt-kb", "198.18.34.3"),
            (nc, "ovt-kc", "198.18.34.4"),
        ):
            testbed.veth(f"{name}0", ns, f"{name}1", None, ip)
        ovs.add_port("br-int", "ovt-ka0", testbed.AS_UPLINK)
        ovs.add_port("br-int", "ovt-kb0", testbed.AS_UPLINK)
        for ns in (na, nb):
            testbed.ping(ns, "198.18.34.1", 2)  # ARP and flows; replies may be late
        with Watch(["br-int", "--db", ovs.db_sock, "--protocol", "icmp"], timeout_s=300) as w:
            assert w.start["backend"] == "fentry"
            # requests are what is measured: a reply late under TCG must not fail it
            testbed.ping(na, "198.18.34.1", 20)
            testbed.ping(nb, "198.18.34.1", 10)
            w.wait_for(lambda w: w.totals("br-int").get("ip_rcv", 0) >= 30, timeout_s=120)
            ovs.del_port("br-int", "ovt-kb0")
            ovs.add_port("br-int", "ovt-kc0", testbed.AS_UPLINK)
            w.wait_for(
                lambda w: any(i["name"] == "ovt-kc0" for i in w.intervals[-1]["interfaces"]),
                timeout_s=60,
            )
            testbed.ping(nc, "198.18.34.1", 15)
            w.wait_for(lambda w: w.totals("br-int").get("ip_rcv", 0) >= 45, timeout_s=120)
            summary = w.stop(timeout_s=120)
    s = {i["name"]: i for i in summary["interfaces"]}
    assert s["br-int"]["role"] == "internal"
    assert s["br-int"]["counters"]["enqueued"] == s["br-int"]["counters"]["ip_rcv"] == 45
    assert s["ovt-ka0"]["counters"]["enqueued"] == 20 and s["ovt-ka0"]["role"] == "uplink"
    assert s["ovt-kb0"]["counters"]["enqueued"] == 10 and s["ovt-kb0"]["gone"]
    assert s["ovt-kc0"]["counters"]["enqueued"] == 15


# fentry's drops: tests/host/test_threshold.py in the 6.12 guest (test_lab.py)
@pytest.mark.parametrize("attach", ["kprobe"])
def test_threshold_and_drops(host_a, attach):
    """Threshold 0: every packet is an event with a real stack; then a backlog
    of one packet overflows and each drop is attributed with its reason."""
    path = "/proc/sys/net/core/netdev_max_backlog"
    with open(path) as f:
        saved = f.read().strip()
    with Watch(
        [
            "-i",
            "ovt-a0",
            "--attach",
            attach,
            "--protocol",
            "udp",
            "--threshold-us",
            "0",
            "--max-events-per-sec",
            "1000",
        ],
        timeout_s=300,
    ) as w:
        testbed.send_udp(host_a, "198.18.30.1", UDP_PORT, 10, cpu=0)
        w.wait_for(lambda w: len(w.events) >= 10, timeout_s=120)
        try:
            testbed.sysctl("net.core.netdev_max_backlog", "1")
            with testbed.rps("ovt-a0", "8"):
                testbed.send_udp(host_a, "198.18.30.1", UDP_PORT, 500, cpu=0, paced=False)
                w.wait_for(lambda w: w.totals("ovt-a0").get("enqueued", 0) >= 510, timeout_s=120)
        finally:
            testbed.sysctl("net.core.netdev_max_backlog", saved)
        summary = w.stop(timeout_s=120)
    for ev in w.events[:10]:
        fns = [f.split("+")[0] for f in ev["stack"]]
        assert "process_backlog" in fns and "net_rx_action" in fns, ev["stack"]
        if attach == "kprobe":  # the stack starts at the probed function, as the seed's
            assert fns[0] == "__netif_receive_skb", ev["stack"]
    i = interface(summary, "ovt-a0")
    c = i["counters"]
    assert c["enqueued"] == 510 and c["dropped"] > 0
    # below 5.17 kfree_skb gives no reason: counted all the same, and said so
    reason = "CPU_BACKLOG" if HAS_DROP_REASONS else "NO_REASON"
    assert i["drops"] == {reason: c["dropped"]}
    notes = summary.get("notes", [])
    assert any("drop reasons unavailable" in n for n in notes) != HAS_DROP_REASONS
    assert c["enqueued"] == c["received"] + c["dropped"] and i["in_flight"] == 0
    assert c["slow"] == c["received"]


# the same pods and VM as tests/host/test_workloads.py, on the kernel datapath
ANTREA = {"container-id": "8c1f", "pod-name": "web-0", "pod-namespace": "shop"}
OVN_K = {"iface-id": "data_db-1", "iface-id-ver": "1f0e", "sandbox": "a3e9"}
OPENSTACK = {"vm-uuid": "d5a2c1b4-7e0f-4a55-8f5d-3c0a9e2b7d10", "iface-id": "9b6f"}


@pytest.mark.parametrize("attach, backend", [("kprobe", "kprobe"), ("auto", "fentry")])
def test_pods_and_vm_kernel_datapath(attach, backend):
    """`watch br-int` finds each pod's eth0 in its namespace and measures it
    exactly; the VM's tap receives in place (tun_get_user -> netif_receive_skb,
    then OVS's rx_handler takes it: no ip_rcv); hops uplink -> pod, VM -> pod."""
    n_a, n_b, n_vm, port = 30, 20, 25, 7002
    tap = "ovt-ltap"
    with (
        testbed.OvsDaemons("system") as ovs,
        testbed.Netns("pa") as pa,
        testbed.Netns("pb") as pb,
        testbed.Netns("pc") as pc,
    ):
        ovs.add_bridge("br-int")
        testbed.address_port("br-int", "198.18.35.1")
        testbed.veth("ovt-lup", pc, "ovt-luq", None, "198.18.35.2")
        testbed.nic_like("ovt-lup")  # a default NIC: NAPI + GRO, no RPS
        ovs.add_port("br-int", "ovt-lup", testbed.AS_UPLINK)
        testbed.pod("ovt-lpa", pa, "198.18.35.10")
        testbed.pod("ovt-lpb", pb, "198.18.35.11")
        ovs.add_port("br-int", "ovt-lpa", *testbed.external_ids(ANTREA))
        ovs.add_port("br-int", "ovt-lpb", *testbed.external_ids(OVN_K))
        testbed.tap(tap)
        try:
            ovs.add_port("br-int", tap, *testbed.external_ids(OPENSTACK))
            for ns in (pa, pb, pc):  # ARP, MAC learning and flows; replies may be late
                testbed.ping(ns, "198.18.35.1", 2)
            testbed.ping(pc, "198.18.35.10", 2)
            testbed.ping(pc, "198.18.35.11", 2)
            args = ["br-int", "--db", ovs.db_sock, "--attach", attach]
            args += ["--protocol", "udp", "--dst-port", str(port)]
            pod_a, pod_b = f"eth0@{pa.name}", f"eth0@{pb.name}"
            with Watch(args, timeout_s=300) as w:
                assert w.start["backend"] == backend
                mac = testbed.mac_of("eth0", pa)
                # The datapath's flows idled out while bcc compiled (TCG: 30+ s): a
                # flow miss goes through ovs-vswitchd, which under TCG can take
                # longer than the hop window (1 s). Warm them, on a port the
                # filter leaves out, so the counted packets take the fast path.
                testbed.send_udp(pc, "198.18.35.10", port + 1, 3)
                testbed.send_udp(pc, "198.18.35.11", port + 1, 3)
                testbed.feed_tap(tap, 3, "198.18.35.20", "198.18.35.10", port + 1, dst_mac=mac)
                testbed.send_udp(pc, "198.18.35.10", port, n_a)
                testbed.send_udp(pc, "198.18.35.11", port, n_b)
                testbed.feed_tap(tap, n_vm, "198.18.35.20", "198.18.35.10", port, dst_mac=mac)
                w.wait_for(
                    lambda w: w.totals(pod_a).get("ip_rcv", 0) >= n_a + n_vm
                    and w.totals(pod_b).get("ip_rcv", 0) >= n_b
                    and w.totals(tap).get("received_sync", 0) >= n_vm,
                    timeout_s=120,
                )
                summary = w.stop(timeout_s=120)
        finally:
            testbed.sh("ip", "link", "del", tap, check=False)
    for pod, n, who in ((pod_a, n_a + n_vm, "shop/web-0"), (pod_b, n_b, "data/db-1")):
        i = interface(summary, pod)
        c = i["counters"]
        assert (i["role"], i["workload"]) == ("pod", who)
        assert c["enqueued"] == c["received"] == c["ip_rcv"] == n, (pod, c)
        assert c["received_sync"] == c["dropped"] == 0
    t = interface(summary, tap)
    c = t["counters"]
    assert (t["role"], t["workload"]) == ("vm", f"vm:{OPENSTACK['vm-uuid']}")
    assert c["received_sync"] == n_vm and c["enqueued"] == c["received"] == c["ip_rcv"] == 0
    up = interface(summary, "ovt-lup")["counters"]
    # received in place from GRO's lists (no RPS): still the hops' start
    assert up["received_sync"] == up["segments"] == n_a + n_b
    assert up["enqueued"] == up["received"] == 0
    for i in summary["interfaces"]:
        assert i["counters"]["flow_lookup_failures"] == 0, i["name"]
    hops = {(h["from"], h["to"]): h for h in summary["hops"]}
    assert hops[("ovt-lup", pod_a)]["count"] == hops[("ovt-lup", pod_a)]["e2e"]["count"] == n_a
    assert hops[("ovt-lup", pod_b)]["count"] == n_b
    assert hops[(tap, pod_a)]["count"] == hops[(tap, pod_a)]["e2e"]["count"] == n_vm
