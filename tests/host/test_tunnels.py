"""Tunnels on the netdev datapath: a remote hypervisor sends to a pod through
VXLAN (a Linux vxlan device) and Geneve (frames over a UDP socket: this VM has
no geneve module), OVS userspace decapsulates. `watch` of the integration
bridge finds the tunnels' underlay (the route to remote_ip -> the underlay
bridge's internal port -> its NIC), counts the inner packets there under the
user's port filter and follows each one to the pod, per tunnel and VNI. The
kernel datapath (vxlan_sys_4789, genev_sys_6081) is tests/lab's."""

from __future__ import annotations

import json

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import Watch, interface, label, run_ovslat

UL, INT, NIC, POD = "ovt-ul", "ovt-int", "ovt-ule", "ovt-tpod"
VX, GN = "ovt-vx", "ovt-gn"
LOCAL, REMOTE, POD_IP, REMOTE_VM = "198.18.70.1", "198.18.70.2", "198.18.71.10", "198.18.71.3"
PORT, VNI_VX, VNI_GN, VLAN = 31400, 100, 200, 7
N_VX, N_GN, N_TAGGED, N_OTHER = 120, 90, 30, 25


@pytest.fixture
def tunnelled():
    """Underlay bridge ovt-ul holding the tunnel endpoint 198.18.70.1, its NIC
    a veth to the remote hypervisor's namespace (198.18.70.2, a vxlan device
    with VNI 100 and no UDP checksum); integration bridge ovt-int with a VXLAN
    port (key 100), a Geneve port (key 200) and a pod. Flows send what the
    tunnels bring to the pod (an 802.1Q tag stripped), nothing else anywhere:
    every count is exactly what was sent."""
    with (
        testbed.OvsDaemons("netdev") as ovs,
        testbed.Netns("tr") as remote,
        testbed.Netns("tp") as pod,
    ):
        ovs.add_bridge(UL)
        testbed.address_port(UL, LOCAL)
        testbed.veth(NIC, remote, "rm0", None, REMOTE)
        ovs.add_port(UL, NIC)
        ovs.add_bridge(INT)
        testbed.pod(POD, pod, POD_IP)
        ovs.add_port(INT, POD)
        for name, kind, key in ((VX, "vxlan", VNI_VX), (GN, "geneve", VNI_GN)):
            ovs.add_port(INT, name, f"type={kind}", f"options:remote_ip={REMOTE}",
                         f"options:key={key}")  # fmt: skip
        vxlan = ["id", str(VNI_VX), "remote", LOCAL, "local", REMOTE, "dstport", "4789"]
        remote.run("ip", "link", "add", "vx0", "type", "vxlan", *vxlan, "noudpcsum", "dev", "rm0")
        testbed.sysctl("net.ipv6.conf.vx0.disable_ipv6", "1", remote.name)
        remote.run("ip", "addr", "add", "198.18.71.2/24", "dev", "vx0")
        remote.run("ip", "link", "set", "vx0", "up")
        mac = testbed.mac_of("eth0", pod)
        testbed.neighbour("vx0", POD_IP, mac, remote)
        ovs.ofctl("del-flows", INT)
        ovs.ofctl("add-flow", INT, f"in_port={VX},actions=output:{POD}")
        ovs.ofctl("add-flow", INT, f"in_port={GN},dl_vlan={VLAN},actions=strip_vlan,output:{POD}")
        ovs.ofctl("add-flow", INT, f"priority=0,in_port={GN},actions=output:{POD}")
        assert testbed.ping(remote, LOCAL, 2) == 2  # ARP for the endpoint, both ways
        testbed.neighbour("rm0", LOCAL, testbed.mac_of(UL), remote)
        yield ovs, remote, pod, mac


def test_discover_finds_each_tunnels_underlay(tunnelled):
    ovs, *_ = tunnelled
    r = run_ovslat(["discover", INT, "--db", ovs.db_sock, "--format", "json"])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["tunnel_ports"] == {"4789": "vxlan", "6081": "geneve"}
    by = {i["name"]: i for i in d["interfaces"]}
    # the route to 198.18.70.2 leaves through ovt-ul, the underlay bridge's
    # internal port: it and that bridge's NIC are the underlay
    for name in (UL, NIC):
        assert by[name]["role"] == "underlay" and by[name]["measurable"], by[name]
        assert by[name]["tunnels"] == [GN, VX]
    for name in (VX, GN):
        assert by[name]["role"] == "tunnel" and not by[name]["measurable"]
        assert "underlay" in by[name]["reason"]
    table = run_ovslat(["discover", INT, "--db", ovs.db_sock]).stdout
    assert f"tunnels {GN},{VX}" in table


def test_vxlan_and_geneve_to_a_pod_from_the_underlay(tunnelled):
    """Exact counts at the underlay's NIC (inner packets, under the port
    filter) and at the pod, and the hop NIC -> pod per tunnel and VNI."""
    ovs, remote, pod, mac = tunnelled
    pod_eth = f"eth0@{pod.name}"
    args = [INT, "--db", ovs.db_sock, "--protocol", "udp", "--dst-port", str(PORT)]
    with Watch(args) as w:
        first = w._next(10, "interval")
        assert {label(i) for i in first["interfaces"]} == {UL, NIC, POD, pod_eth, INT}
        # paced (as the Geneve sender is): a burst puts many packets in flight
        # through OVS userspace at once, where two may share a slot of the
        # mark table (a lost hop, counted: README, Known limits)
        remote.run(*testbed.udp_argv(POD_IP, PORT, count=N_VX, pps=1000))
        testbed.send_udp(remote, POD_IP, PORT + 1, N_OTHER)  # filtered out everywhere
        geneve = (remote, "geneve", LOCAL, VNI_GN, REMOTE_VM, POD_IP, PORT)
        testbed.send_tunnelled(*geneve, N_GN, mac, option_words=2)
        testbed.send_tunnelled(*geneve, N_TAGGED, mac, vlan=VLAN, first_id=1 + N_GN)
        n = N_VX + N_GN + N_TAGGED
        w.wait_for(lambda w: w.totals(pod_eth).get("ip_rcv", 0) >= n)
        summary = w.stop()
    nic = interface(summary, NIC)
    assert (nic["role"], nic["bridge"]) == ("underlay", INT)
    c = nic["counters"]
    # the outer packets go to the endpoint's MAC, not the NIC's: no ip_rcv here
    assert c["enqueued"] == c["received"] == c["encapsulated"] == n, c
    assert c["parse_failures"] == c["flow_lookup_failures"] == 0, c
    lost = c["hops_lost"]
    assert nic["stages"]["enqueue_to_receive"]["count"] == n
    c = interface(summary, pod_eth)["counters"]
    assert c["enqueued"] == c["received"] == c["ip_rcv"] == n, c
    assert c["encapsulated"] == 0  # decapsulated by OVS: a plain packet in the pod
    assert interface(summary, UL)["counters"]["enqueued"] == 0  # OVS popped them
    hops = {(h["from"], h["to"], json.dumps(h["tunnel"])): h for h in summary["hops"]}
    assert set(hops) == {
        (NIC, pod_eth, json.dumps({"type": "vxlan", "vni": VNI_VX})),
        (NIC, pod_eth, json.dumps({"type": "geneve", "vni": VNI_GN})),
    }
    vx = hops[(NIC, pod_eth, json.dumps({"type": "vxlan", "vni": VNI_VX}))]
    gn = hops[(NIC, pod_eth, json.dumps({"type": "geneve", "vni": VNI_GN}))]
    # every packet's hop, or its mark's loss, counted: exactly
    assert vx["count"] + gn["count"] + lost == n and lost <= 2, (vx["count"], gn["count"], lost)
    assert vx["count"] == vx["e2e"]["count"] and gn["count"] == gn["e2e"]["count"]
    assert N_VX - lost <= vx["count"] <= N_VX and N_GN + N_TAGGED - lost <= gn["count"]


def test_outer_ipv6_and_vlan_tags():
    """Without OVS: a veth receiving VXLAN over IPv6 (parsed to the inner
    IPv4 datagram: the port filter, the inner family, S3 at IPv6's hook) and
    frames whose 802.1Q / 802.1ad tags the device left in place (one tag,
    then two): each counted exactly under the inner port filter."""
    n6, n_q, n_qinq = 60, 40, 30
    with testbed.Netns("tq") as ns:
        testbed.veth("ovt-tq0", ns, "tq1", "198.18.72.1", "198.18.72.2")
        testbed.ipv6("ovt-tq0", "2001:2:0:72::1")
        testbed.ipv6("tq1", "2001:2:0:72::2", ns)
        testbed.neighbour("ovt-tq0", "2001:2:0:72::2", testbed.mac_of("tq1", ns))
        testbed.neighbour("tq1", "2001:2:0:72::1", testbed.mac_of("ovt-tq0"), ns)
        mac = testbed.mac_of("ovt-tq0")
        args = ["-i", "ovt-tq0", "--protocol", "udp", "--dst-port", str(PORT)]
        with Watch(args) as w:
            w._next(10, "interval")
            testbed.send_tunnelled(ns, "vxlan", "2001:2:0:72::1", 300, "198.18.73.2",
                                   "198.18.73.1", PORT, n6, mac)  # fmt: skip
            testbed.send_tagged(ns, "tq1", mac, "198.18.72.2", "198.18.72.1", PORT, n_q, [7])
            testbed.send_tagged(ns, "tq1", mac, "198.18.72.2", "198.18.72.1", PORT, n_qinq,
                                [100, 7])  # fmt: skip
            n = n6 + n_q + n_qinq
            w.wait_for(lambda w: w.totals("ovt-tq0").get("received", 0) >= n)
            summary = w.stop()
    i = interface(summary, "ovt-tq0")
    c = i["counters"]
    assert c["enqueued"] == c["received"] == n and c["encapsulated"] == n6, c
    assert c["parse_failures"] == c["flow_lookup_failures"] == 0, c
    # IPv6 received the VXLAN datagrams; the tagged frames go to no VLAN
    # device (none exists here), so IPv4 never sees them
    assert c["ip_rcv"] == n6, c
    assert i["families"]["ipv4"] == {"enqueued": n, "received": n, "received_sync": 0,
                                     "ip_rcv": n6}  # fmt: skip
    assert i["families"]["ipv6"]["enqueued"] == i["families"]["ipv6"]["ip_rcv"] == 0
