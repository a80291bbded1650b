"""Classification of a bridge's interfaces, on OVSDB rows and netlink links
recorded from real OVS (tests/unit/fixtures/record_topology.py)."""

import json
from pathlib import Path

import pytest

from ovslat.discovery.topology import (
    Link,
    OvsInterface,
    Peer,
    classify,
    receive_path,
    workload,
)

FIXTURES = Path(__file__).parent / "fixtures"


def load(datapath):
    d = json.loads((FIXTURES / f"topology-{datapath}.json").read_text())
    rows = [OvsInterface(**i) for i in d["interfaces"]]
    links = {n: Link(**v) for n, v in d["links"].items()}
    return classify(d["bridge"], d["datapath_type"], rows, links)


def by_name(bridge):
    return {m.name: m for m in bridge.members}


def test_kernel_datapath():
    b = load("system")
    m = by_name(b)
    assert b.datapath_type == "system"
    assert (m["br-int"].role, m["br-int"].link.kind, m["br-int"].measurable) == (
        "internal",
        "openvswitch",
        True,
    )
    assert m["br-int"].warning is None  # receives through netif_rx: always enqueued
    assert (m["rec-up0"].role, m["rec-up0"].device) == ("uplink", "rec-up0")
    assert m["rec-up0"].warning is None  # a veth always enqueues; RPS does not matter
    assert (m["tap-vm0"].role, m["tap-vm0"].link.kind) == ("vm", "tun")
    assert (m["vxlan0"].role, m["vxlan0"].device, m["vxlan0"].measurable) == (
        "tunnel",
        "vxlan_sys_4789",
        True,
    )
    assert (m["gnv0"].device, m["gnv0"].measurable) == ("genev_sys_6082", True)
    assert m["patch-ex"].role == "patch" and "no kernel device" in m["patch-ex"].reason
    assert {x.name for x in b.measurable()} == {"br-int", "rec-up0", "tap-vm0", "vxlan0", "gnv0"}
    assert {x.name for x in b.measurable(only={"tunnel"})} == {"vxlan0", "gnv0"}
    assert {x.name for x in b.measurable(exclude={"br-int", "gnv0"})} == {
        "rec-up0",
        "tap-vm0",
        "vxlan0",
    }


def test_netdev_datapath():
    b = load("netdev")
    m = by_name(b)
    assert b.datapath_type == "netdev"
    assert m["br-int"].link.kind == "tun" and "without a backlog" in m["br-int"].warning
    for tunnel in ("vxlan0", "gnv0"):
        assert m[tunnel].role == "tunnel" and not m[tunnel].measurable
        assert "userspace datapath" in m[tunnel].reason
    assert {x.name for x in b.measurable()} == {"br-int", "rec-up0", "tap-vm0"}


def test_physical_uplink_without_rps_is_warned():
    rows = [OvsInterface("eth1", "", "eth1", 1), OvsInterface("eth2", "", "eth2", 2)]
    links = {
        "eth1": Link("eth1", 4, "", 1500, False, napi=True),
        "eth2": Link("eth2", 5, "", 1500, True, napi=True),
    }
    m = by_name(classify("br-ex", "", rows, links))
    assert "RPS is off on eth1" in m["eth1"].warning
    assert "synchronous receives" in m["eth1"].warning
    assert m["eth2"].warning is None
    assert "synchronous receives" in receive_path(links["eth1"])
    assert "enqueue_to_backlog" in receive_path(links["eth2"])
    assert receive_path(Link("v", 6, "veth", 1500, False)).startswith("netif_rx()")


def test_dpdk_is_not_measurable():
    m = by_name(classify("br", "netdev", [OvsInterface("d0", "dpdk", "d0", 1)], {}))["d0"]
    assert not m.measurable and "never enter the kernel" in m.reason


@pytest.mark.parametrize("ovs_type", ["dpdkvhostuser", "dpdkvhostuserclient"])
def test_vhost_user_is_a_vm_not_measurable(ovs_type):
    row = OvsInterface("vhu0", ovs_type, "vhu0", 1, external_ids={"vm-uuid": "4f1c"})
    m = by_name(classify("br", "netdev", [row], {}))["vhu0"]
    assert (m.role, m.workload, m.measurable) == ("vm", "vm:4f1c", False)
    assert "never through the kernel's receive path" in m.reason


# external_ids as each orchestrator writes them (its own source: Antrea
# pkg/agent/cniserver, kube-ovn pkg/daemon/ovs_linux.go, OVN-Kubernetes
# go-controller/pkg/cni/helper_linux.go, nova/os-vif)
ANTREA = {"container-id": "8c1f", "pod-name": "web-0", "pod-namespace": "shop",
          "attached-mac": "02:00:00:00:00:01", "ip-address": "198.18.0.5"}  # fmt: skip
KUBE_OVN = {"iface-id": "db-1.data", "pod_name": "db-1", "pod_namespace": "data",
            "ip": "198.18.0.6", "pod_netns": "/var/run/netns/cni-1"}  # fmt: skip
OVN_K = {"attached_mac": "02:00:00:00:00:02", "iface-id": "kube-system_coredns-5d78c9869d-x2",
         "iface-id-ver": "1f0e", "sandbox": "a3e9", "ip_addresses": "198.18.0.7/24"}  # fmt: skip
OPENSTACK = {"iface-id": "9b6f0c6e-2f0a-4c4e-9d53-1a6b8e1f0c11", "iface-status": "active",
             "attached-mac": "fa:16:3e:00:00:01",
             "vm-uuid": "d5a2c1b4-7e0f-4a55-8f5d-3c0a9e2b7d10"}  # fmt: skip


@pytest.mark.parametrize(
    "ids, expected",
    [
        (ANTREA, "shop/web-0"),
        (KUBE_OVN, "data/db-1"),
        (OVN_K, "kube-system/coredns-5d78c9869d-x2"),
        (OPENSTACK, "vm:d5a2c1b4-7e0f-4a55-8f5d-3c0a9e2b7d10"),
        ({"iface-id": "9b6f0c6e-2f0a-4c4e-9d53-1a6b8e1f0c11"}, ""),  # a port id, no name
        ({}, ""),
    ],
    ids=["antrea", "kube-ovn", "ovn-kubernetes", "openstack", "iface-id-only", "none"],
)
def test_workload_names(ids, expected):
    assert workload(ids) == expected


def test_pods_vms_and_the_role_override():
    rows = [
        OvsInterface("antrea-web", "", "antrea-web", 1, external_ids=ANTREA),
        OvsInterface("veth-plain", "", "veth-plain", 2),
        OvsInterface("tap-vm", "", "tap-vm", 3, external_ids=OPENSTACK),
        OvsInterface("veth-nic", "", "veth-nic", 4, external_ids={"ovslat_role": "uplink"}),
        OvsInterface("veth-local", "", "veth-local", 5),
    ]
    links = {
        "antrea-web": Link("antrea-web", 10, "veth", 1500, False, 2, 0),
        "veth-plain": Link("veth-plain", 11, "veth", 1500, False, 2, 1),
        "tap-vm": Link("tap-vm", 12, "tun", 1500, False),
        "veth-nic": Link("veth-nic", 13, "veth", 1500, False, 2, 2),
        "veth-local": Link("veth-local", 14, "veth", 1500, False, 15, None),  # peer here
    }
    pod_end = Peer("eth0", 2, "cni-1", "/var/run/netns/cni-1", 4026532999)
    b = classify("br-int", "netdev", rows, links, {"antrea-web": pod_end})
    m = by_name(b)
    assert (m["antrea-web"].role, m["antrea-web"].workload, m["antrea-web"].peer) == (
        "pod",
        "shop/web-0",
        pod_end,
    )
    # a pod whose namespace was not found: its host end only, and said so
    assert m["veth-plain"].role == "pod" and m["veth-plain"].peer is None
    assert "only the host end is measured" in m["veth-plain"].warning
    assert (m["tap-vm"].role, m["tap-vm"].workload) == ("vm", f"vm:{OPENSTACK['vm-uuid']}")
    assert m["veth-nic"].role == "uplink" and m["veth-local"].role == "uplink"
    assert b.workloads == ["shop/web-0", f"vm:{OPENSTACK['vm-uuid']}"]
    # --pod: only that workload among the workloads; the others stay
    picked = {x.name for x in b.measurable(workloads={"shop/web-0"})}
    assert picked == {"antrea-web", "veth-plain", "veth-nic", "veth-local"}
    assert {x.name for x in b.measurable(only={"pod"})} == {"antrea-web", "veth-plain"}


def test_missing_device_is_explained():
    rows = [OvsInterface("gone0", "", "gone0", -1, error="could not open network device")]
    m = by_name(classify("br", "system", rows, {}))["gone0"]
    assert m.reason == "no kernel device 'gone0' (OVS: could not open network device)"


def test_underlays_and_tunnel_ports():
    """A tunnel's underlay (found by resolve(): the route to remote_ip, and
    the NIC behind an internal port) is measured with role underlay, naming
    the tunnels it carries; a device already on the bridge keeps its role.
    VXLAN and Geneve ports (dst_port or IANA's) are the parsed ones."""
    rows = [
        OvsInterface("vx0", "vxlan", "vx0", 2, {"remote_ip": "198.18.70.2", "key": "100"}),
        OvsInterface("gn0", "geneve", "gn0", 3, {"remote_ip": "flow", "dst_port": "6082"}),
        OvsInterface("gre0", "gre", "gre0", 4, {"remote_ip": "198.18.70.3"}),
        OvsInterface("up0", "", "up0", 5),
    ]
    links = {n: Link(n, i, "veth", 1500, False) for i, n in enumerate(("br-ul", "nic0", "up0"), 10)}
    underlays = {
        "br-ul": ("gre0", "vx0"),
        "nic0": ("gre0", "vx0"),
        "up0": ("vx0",),
        "gone0": ("gn0",),
    }
    b = classify("br-int", "netdev", rows, links, underlays=underlays)
    m = by_name(b)
    assert (m["nic0"].role, m["nic0"].tunnels, m["nic0"].measurable) == (
        "underlay",
        ("gre0", "vx0"),
        True,
    )
    assert m["br-ul"].role == "underlay" and m["br-ul"].device == "br-ul"
    assert m["up0"].role == "uplink" and m["up0"].tunnels == ()  # on the bridge already
    assert not m["gone0"].measurable and "no kernel device" in m["gone0"].reason
    assert b.tunnel_ports == ((4789, "vxlan"), (6082, "geneve"))  # not GRE: not parsed
    assert {x.name for x in b.measurable(only={"underlay"})} == {"br-ul", "nic0"}


@pytest.mark.parametrize(
    "options, want",
    [
        ({"remote_ip": "198.18.70.2"}, ("route", "198.18.70.2")),
        ({"remote_ip": "flow", "local_ip": "198.18.70.1"}, ("local", "198.18.70.1")),
        ({"remote_ip": "198.18.70.2", "local_ip": "198.18.70.1"}, ("route", "198.18.70.2")),
        ({"remote_ip": "flow"}, None),
        ({}, None),
    ],
)
def test_where_a_tunnels_underlay_is_looked_for(options, want):
    from ovslat.discovery.topology import tunnel_port, underlay_address

    i = OvsInterface("t0", "geneve", "t0", 1, options)
    assert underlay_address(i) == want
    assert tunnel_port(i) == 6081
    assert underlay_address(OvsInterface("p0", "", "p0", 2, options)) is None
    assert tunnel_port(OvsInterface("v0", "vxlan", "v0", 3, {"dst_port": "8472"})) == 8472
