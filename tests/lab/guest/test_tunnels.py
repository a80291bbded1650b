"""Runs inside the kernel lab (tests/lab/test_lab.py, the 6.1 guest): VXLAN
and Geneve on the OVS kernel datapath, each from a remote hypervisor's Linux
tunnel device (both modules exist here). The outer packets arrive on an
underlay NIC holding the endpoint address (found by the route to each
tunnel's remote_ip), the kernel decapsulates them into vxlan_sys_4789 /
genev_sys_6081 (a GRO cell's list receive), OVS hands the inner packet to the
pod: every row exact, every hop named by its tunnel and VNI."""

from __future__ import annotations

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import Watch, interface

POD_IP, PORT = "198.18.42.10", 7003
# (tunnel type, VNI, OVS port, underlay NIC, endpoint here, remote end,
#  the remote's inner address, its Linux device, datagrams sent)
TUNNELS = (
    ("vxlan", 100, "ovt-lvx", "ovt-lux", "198.18.40.1", "198.18.40.2", "198.18.42.2", 40),
    ("geneve", 200, "ovt-lgn", "ovt-lug", "198.18.41.1", "198.18.41.2", "198.18.42.3", 30),
)
DEVICES = {"vxlan": "vxlan_sys_4789", "geneve": "genev_sys_6081"}


# fentry alone (auto picks it): the kprobe backend runs the same parser in
# every other lab test, and each backend here costs ~45 s of CI under TCG
@pytest.mark.parametrize("attach, backend", [("auto", "fentry")])
def test_vxlan_and_geneve_kernel_datapath(attach, backend):
    with (
        testbed.OvsDaemons("system") as ovs,
        testbed.Netns("lp") as pod,
        testbed.Netns("lx") as rx,
        testbed.Netns("lg") as rg,
    ):
        ovs.add_bridge("br-int")
        testbed.pod("ovt-ltp", pod, POD_IP)
        ovs.add_port("br-int", "ovt-ltp")
        mac = testbed.mac_of("eth0", pod)
        ovs.ofctl("del-flows", "br-int")
        for t, ns in zip(TUNNELS, (rx, rg), strict=True):
            kind, vni, port, nic, local, remote, inner, _ = t
            testbed.veth(nic, ns, "rm0", local, remote)
            ovs.add_port("br-int", port, f"type={kind}", f"options:remote_ip={remote}",
                         f"options:key={vni}")  # fmt: skip
            ovs.ofctl("add-flow", "br-int", f"in_port={port},actions=output:ovt-ltp")
            ns.run("ip", "link", "add", "tun0", "type", kind, "id", str(vni), "remote", local,
                   *(["local", remote, "dstport", "4789"] if kind == "vxlan" else []))  # fmt: skip
            testbed.sysctl("net.ipv6.conf.tun0.disable_ipv6", "1", ns.name)
            ns.run("ip", "addr", "add", f"{inner}/24", "dev", "tun0")
            ns.run("ip", "link", "set", "tun0", "up")
            testbed.neighbour("tun0", POD_IP, mac, ns)
            testbed.ping(ns, local, 2)  # ARP for the endpoint
        testbed.wait_until(
            lambda: all(testbed.sh("ip", "link", "show", d, check=False).returncode == 0
                        for d in DEVICES.values()),
            what="the kernel datapath's tunnel devices",
        )  # fmt: skip
        args = ["br-int", "--db", ovs.db_sock, "--attach", attach]
        args += ["--protocol", "udp", "--dst-port", str(PORT)]
        pod_eth = f"eth0@{pod.name}"
        n = sum(t[-1] for t in TUNNELS)
        with Watch(args, timeout_s=300) as w:
            assert w.start["backend"] == backend
            # warm the datapath's flows (a miss under TCG can outlast the hop
            # window) on a port the filter leaves out
            for ns in (rx, rg):
                testbed.send_udp(ns, POD_IP, PORT + 1, 3)
            for t, ns in zip(TUNNELS, (rx, rg), strict=True):  # paced: few marks in flight
                ns.run(*testbed.udp_argv(POD_IP, PORT, count=t[-1], pps=1000))
            w.wait_for(lambda w: w.totals(pod_eth).get("ip_rcv", 0) >= n, timeout_s=120)
            summary = w.stop(timeout_s=120)
    c = interface(summary, pod_eth)["counters"]
    assert c["enqueued"] == c["received"] == c["ip_rcv"] == n, c
    hops = {(h["from"], h["to"], (h["tunnel"] or {}).get("vni")): h for h in summary["hops"]}
    for kind, vni, _, nic, *_, sent in TUNNELS:
        u = interface(summary, nic)
        c = u["counters"]
        assert u["role"] == "underlay", u
        # the outer packets, counted as their inner ones under the port filter;
        # IPv4 receives them (the endpoint's address is here) and hands them to UDP
        assert c["enqueued"] == c["received"] == c["ip_rcv"] == c["encapsulated"] == sent, c
        dev = interface(summary, DEVICES[kind])
        c = dev["counters"]
        assert dev["role"] == "tunnel"
        # decapsulated into the GRO cell, received from its list: in place
        assert c["received_sync"] == sent and c["enqueued"] == c["encapsulated"] == 0, c
        tunnel = {"type": kind, "vni": vni}
        into, out = hops[(nic, DEVICES[kind], vni)], hops[(DEVICES[kind], pod_eth, vni)]
        assert into["tunnel"] == out["tunnel"] == tunnel
        # every hop, or its mark's loss (a shared slot of the mark table), counted
        # exactly; a packet whose first mark was lost leaves the tunnel device
        # with no tunnel known (that hop's key has none)
        nic_lost, dev_lost = u["counters"]["hops_lost"], c["hops_lost"]
        assert into["count"] + nic_lost == sent and nic_lost + dev_lost <= 2
        onward = sum(h["count"] for k, h in hops.items() if k[:2] == (DEVICES[kind], pod_eth))
        assert onward + dev_lost == sent
        assert sent - nic_lost - dev_lost <= hops[(nic, pod_eth, vni)]["e2e"]["count"] <= sent
    for i in summary["interfaces"]:
        assert i["counters"]["flow_lookup_failures"] == 0, i
