"""Classification of a bridge's interfaces, on OVSDB rows and netlink links
recorded from real OVS (tests/unit/fixtures/record_topology.py)."""

import json
from pathlib import Path

import pytest

from ovslat.discovery.topology import Link, OvsInterface, classify

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
    links = {"eth1": Link("eth1", 4, "", 1500, False), "eth2": Link("eth2", 5, "", 1500, True)}
    m = by_name(classify("br-ex", "", rows, links))
    assert "RPS is off on eth1" in m["eth1"].warning
    assert m["eth2"].warning is None


@pytest.mark.parametrize("ovs_type", ["dpdk", "dpdkvhostuserclient"])
def test_dpdk_is_not_measurable(ovs_type):
    m = by_name(classify("br", "netdev", [OvsInterface("d0", ovs_type, "d0", 1)], {}))["d0"]
    assert not m.measurable and "never enter the kernel" in m.reason


def test_missing_device_is_explained():
    rows = [OvsInterface("gone0", "", "gone0", -1, error="could not open network device")]
    m = by_name(classify("br", "system", rows, {}))["gone0"]
    assert m.reason == "no kernel device 'gone0' (OVS: could not open network device)"
