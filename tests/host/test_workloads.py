"""Pods and VMs on a bridge (netdev datapath here; the kernel datapath in the
lab): each pod's own eth0 measured in its namespace, named as its
orchestrator names it, and a VM's tap, whose receives are synchronous."""

from __future__ import annotations

import json
import time

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import Watch, interface, label, run_ovslat

BR, TAP = "ovt-kbr", "ovt-ktap"
PORT = 31337
# external_ids as Antrea and OVN-Kubernetes write them (tests/unit/test_topology.py)
ANTREA = {"container-id": "8c1f", "pod-name": "web-0", "pod-namespace": "shop"}
OVN_K = {"iface-id": "data_db-1", "iface-id-ver": "1f0e", "sandbox": "a3e9"}
OPENSTACK = {"vm-uuid": "d5a2c1b4-7e0f-4a55-8f5d-3c0a9e2b7d10", "iface-id": "9b6f"}
N_A, N_B, N_TAP, N_UP = 50, 30, 40, 20


@pytest.fixture
def node():
    """A netdev bridge holding 198.18.66.1, an uplink (a veth playing the
    NIC, a client behind it), two pods (Antrea, OVN-Kubernetes) and a VM's
    tap; ARP warmed up."""
    with (
        testbed.OvsDaemons("netdev") as ovs,
        testbed.Netns("pa") as pa,
        testbed.Netns("pb") as pb,
        testbed.Netns("pc") as pc,
    ):
        ovs.add_bridge(BR)
        testbed.address_port(BR, "198.18.66.1")
        testbed.pod("ovt-kpa", pa, "198.18.66.10")
        testbed.pod("ovt-kpb", pb, "198.18.66.11")
        ovs.add_port(BR, "ovt-kpa", *testbed.external_ids(ANTREA))
        ovs.add_port(BR, "ovt-kpb", *testbed.external_ids(OVN_K))
        testbed.veth("ovt-kup", pc, "ovt-kuq", None, "198.18.66.2")
        ovs.add_port(BR, "ovt-kup", testbed.AS_UPLINK)
        testbed.tap(TAP)
        try:
            ovs.add_port(BR, TAP, *testbed.external_ids(OPENSTACK))
            # the VM's frames end at the tap (its S3 is the host's ip_rcv):
            # not flooded to the pods, whose counts stay exactly theirs
            ovs.ofctl("add-flow", BR, f"priority=100,in_port={TAP},actions=drop")
            for ns in (pa, pb, pc):
                assert testbed.ping(ns, "198.18.66.1", 2) == 2
            assert testbed.ping(pc, "198.18.66.10", 2) == 2
            yield ovs, pa, pb, pc
        finally:
            testbed.sh("ip", "link", "del", TAP, check=False)


def test_discover_names_pods_and_vms(node):
    ovs, pa, pb, _ = node
    r = run_ovslat(["discover", BR, "--db", ovs.db_sock, "--format", "json"])
    assert r.returncode == 0, r.stderr
    by = {i["name"]: i for i in json.loads(r.stdout)["interfaces"]}
    assert (by["ovt-kpa"]["role"], by["ovt-kpa"]["workload"]) == ("pod", "shop/web-0")
    assert (by["ovt-kpb"]["role"], by["ovt-kpb"]["workload"]) == ("pod", "data/db-1")
    assert by["ovt-kpa"]["peer"]["name"] == "eth0" and by["ovt-kpa"]["peer"]["netns"] == pa.name
    assert by["ovt-kpb"]["peer"]["netns"] == pb.name
    assert (by[TAP]["role"], by[TAP]["workload"]) == ("vm", f"vm:{OPENSTACK['vm-uuid']}")
    table = run_ovslat(["discover", BR, "--db", ovs.db_sock]).stdout
    assert "shop/web-0" in table and f"eth0@{pa.name}" in table


def test_watch_measures_each_pod_in_its_namespace_and_the_vm_tap(node):
    ovs, pa, pb, pc = node
    args = [BR, "--db", ovs.db_sock, "--protocol", "udp", "--dst-port", str(PORT)]
    with Watch(args) as w:
        first = w._next(10, "interval")
        measured = {label(i) for i in first["interfaces"]}
        pods = {f"eth0@{pa.name}", f"eth0@{pb.name}", "ovt-kpa", "ovt-kpb"}
        assert measured == pods | {TAP, BR, "ovt-kup"}
        testbed.send_udp(None, "198.18.66.10", PORT, N_A)
        testbed.send_udp(None, "198.18.66.11", PORT, N_B)
        testbed.feed_tap(TAP, N_TAP, "198.18.66.20", "198.18.66.1", PORT)
        testbed.send_udp(pc, "198.18.66.10", PORT, N_UP)  # through the uplink
        pod_a, pod_b = f"eth0@{pa.name}", f"eth0@{pb.name}"
        w.wait_for(
            lambda w: w.totals(pod_a).get("ip_rcv", 0) >= N_A + N_UP
            and w.totals(pod_b).get("ip_rcv", 0) >= N_B
            and w.totals(TAP).get("ip_rcv", 0) >= N_TAP
        )
        summary = w.stop()
    for pod, n, who in ((pod_a, N_A + N_UP, "shop/web-0"), (pod_b, N_B, "data/db-1")):
        i = interface(summary, pod)
        c = i["counters"]
        assert (i["role"], i["workload"], i["bridge"]) == ("pod", who, BR)
        assert c["enqueued"] == c["received"] == c["ip_rcv"] == n, (pod, c)
        assert c["received_sync"] == c["flow_lookup_failures"] == c["dropped"] == 0
        assert i["stages"]["enqueue_to_receive"]["count"] == n
        assert i["stages"]["receive_to_ip"]["count"] == n
    tap = interface(summary, TAP)
    c = tap["counters"]
    assert tap["workload"] == f"vm:{OPENSTACK['vm-uuid']}" and tap["role"] == "vm"
    # the VM's frames are received in place: no backlog, no S1 -> S2
    assert c["received_sync"] == c["ip_rcv"] == N_TAP and c["enqueued"] == c["received"] == 0
    assert tap["stages"]["receive_to_ip"]["count"] == N_TAP
    for i in summary["interfaces"]:
        assert i["counters"]["flow_lookup_failures"] == 0, i["name"]
    # the pod's host end only transmits to the pod: it receives nothing
    host_a = interface(summary, "ovt-kpa")["counters"]
    assert host_a["enqueued"] == host_a["received_sync"] == 0
    # the uplink -> pod hop: S2 on the uplink -> S1 on the pod's eth0, and from
    # S1 on the uplink to S3 inside the pod (what the host sent started at no
    # measured receive: no hop)
    (hop,) = summary["hops"]
    assert (hop["from"], hop["to"]) == ("ovt-kup", pod_a)
    assert hop["count"] == hop["e2e"]["count"] == N_UP


def test_pod_selection_and_an_unknown_pod(node):
    ovs, pa, _, _ = node
    r = run_ovslat(["watch", BR, "--db", ovs.db_sock, "--pod", "shop/nope", "--duration", "1"])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (
        f"ovslat: error: pod 'shop/nope' not found on bridge {BR} (workloads there: data/db-1, "
        f"shop/web-0, vm:{OPENSTACK['vm-uuid']}); name it NAMESPACE/POD as `ovslat discover "
        f"{BR}` shows it\n"
    )
    args = [BR, "--db", ovs.db_sock, "--pod", "shop/web-0", "--protocol", "udp"]
    with Watch(args) as w:
        first = w._next(10, "interval")
        summary = w.stop()
    measured = {label(i) for i in first["interfaces"]}
    # that pod's two ends; the uplink and the internal port stay; not the other workloads
    assert measured == {"ovt-kpa", f"eth0@{pa.name}", "ovt-kup", BR}
    assert summary["type"] == "summary"


def test_pods_coming_and_going_are_followed(node):
    """A pod added to the bridge while watching is measured at both ends,
    its eth0 in its namespace, within 2 s; a pod deleted keeps its figures."""
    ovs, pa, _, _ = node
    args = [BR, "--db", ovs.db_sock, "--protocol", "udp", "--dst-port", str(PORT)]
    with testbed.Netns("pn") as pn, Watch(args) as w:
        testbed.pod("ovt-kpn", pn, "198.18.66.12")
        added = time.monotonic()
        ovs.add_port(BR, "ovt-kpn", *testbed.external_ids({**ANTREA, "pod-name": "web-1"}))
        new = f"eth0@{pn.name}"

        def measured(w, name, gone=False):
            last = w.intervals[-1]["interfaces"] if w.intervals else []
            return any(label(i) == name and i["gone"] == gone for i in last)

        w.wait_for(lambda w: measured(w, new), 10)
        assert time.monotonic() - added <= 2.0 + 0.5  # 2 s, plus one report interval
        assert testbed.ping(pn, "198.18.66.1", 2) == 2  # ARP, so the host can reach it
        testbed.send_udp(None, "198.18.66.12", PORT, 25)
        w.wait_for(lambda w: w.totals(new).get("ip_rcv", 0) >= 25)
        ovs.del_port(BR, "ovt-kpa")
        gone = f"eth0@{pa.name}"
        w.wait_for(lambda w: measured(w, gone, gone=True), 10)
        summary = w.stop()
    i = interface(summary, new)
    assert (i["workload"], i["role"]) == ("shop/web-1", "pod")
    assert i["counters"]["enqueued"] == i["counters"]["ip_rcv"] == 25
    assert interface(summary, gone)["gone"] and interface(summary, "ovt-kpa")["gone"]


def test_doctor_shows_the_pods_own_ends(node):
    ovs, pa, pb, _ = node
    r = run_ovslat(["doctor", BR, "--db", ovs.db_sock], timeout_s=180)
    lines = r.stdout.splitlines()
    (a,) = (line for line in lines if " ovt-kpa " in line)
    assert f"pod, device ovt-kpa, RPS off, shop/web-0, its end eth0@{pa.name}: measurable" in a
    (b,) = (line for line in lines if " ovt-kpb " in line)
    assert f"data/db-1, its end eth0@{pb.name}" in b
    (t,) = (line for line in lines if f" {TAP} " in line)
    assert f"vm, device {TAP}" in t and f"vm:{OPENSTACK['vm-uuid']}" in t
