"""`ovslat discover` and `ovslat watch BRIDGE` against a real ovsdb-server and
ovs-vswitchd (netdev datapath here; the kernel datapath runs in the lab)."""

from __future__ import annotations

import json
import time

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import Watch, interface, run_ovslat

BR = "ovt-dbr"


@pytest.fixture
def ovs():
    with testbed.OvsDaemons("netdev") as ovs:
        yield ovs


def test_discover_roles_and_reasons(ovs):
    with testbed.Netns("x") as nx:
        ovs.add_bridge(BR)
        ovs.add_bridge("ovt-dbr2")
        testbed.veth("ovt-du0", nx, "ovt-du1", None, "198.18.61.2")
        testbed.veth("ovt-dv0", nx, "ovt-dv1", None, "198.18.61.3")
        ovs.add_port(BR, "ovt-du0")  # a veth into a namespace: a pod
        ovs.add_port(BR, "ovt-dv0", testbed.AS_UPLINK)  # the same, said to be a NIC
        ovs.add_port(BR, "ovt-dp0", "type=patch", "options:peer=ovt-dp1")
        ovs.add_port("ovt-dbr2", "ovt-dp1", "type=patch", "options:peer=ovt-dp0")
        r = run_ovslat(["discover", BR, "--db", ovs.db_sock, "--format", "json"])
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        by_name = {i["name"]: i for i in d["interfaces"]}
        assert d["datapath_type"] == "netdev"
        assert set(by_name) == {BR, "ovt-du0", "ovt-dv0", "ovt-dp0"}
        assert by_name[BR]["role"] == "internal" and by_name[BR]["kind"] == "tun"
        assert by_name[BR]["measurable"] and "without a backlog" in by_name[BR]["warning"]
        for up, role in (("ovt-du0", "pod"), ("ovt-dv0", "uplink")):
            assert by_name[up]["role"] == role and by_name[up]["kind"] == "veth"
            assert by_name[up]["measurable"] and by_name[up]["ofport"] >= 1
        # the pod's own end, found in its namespace (the uplink's is not looked for)
        assert by_name["ovt-du0"]["peer"]["name"] == "ovt-du1"
        assert by_name["ovt-du0"]["peer"]["netns"] == nx.name
        assert by_name["ovt-dv0"]["peer"] is None
        assert by_name["ovt-dp0"]["role"] == "patch"
        assert not by_name["ovt-dp0"]["measurable"]
        assert "no kernel device" in by_name["ovt-dp0"]["reason"]
        table = run_ovslat(["discover", BR, "--db", ovs.db_sock])
        assert "not measurable: ovt-dp0: patch port" in table.stdout


def test_bridge_errors(ovs):
    ovs.add_bridge(BR)
    r = run_ovslat(["watch", "ovt-nobr", "--db", ovs.db_sock])
    assert r.returncode == 2
    assert r.stderr == (
        f"ovslat: error: bridge 'ovt-nobr' not found in OVSDB at {ovs.db_sock} "
        f"(bridges: {BR})\n"
    )
    r = run_ovslat(["discover", BR, "--db", "unix:/nonexistent/db.sock"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "cannot reach OVSDB at unix:/nonexistent/db.sock (no such socket)" in r.stderr
    r = run_ovslat(["watch", BR, "--db", ovs.db_sock, "--only", "tunnel"])
    assert r.returncode == 2 and "has nothing measurable" in r.stderr, r.stderr
    r = run_ovslat(["watch", BR, "--db", ovs.db_sock, "--only", "spine"])
    assert r.returncode == 2 and "unknown role 'spine'" in r.stderr


def _ifaces(rec) -> dict:
    return {i["name"]: i for i in rec["interfaces"]}


def test_watch_follows_ports_added_and_deleted(ovs):
    """Three client namespaces on veth uplinks; ports come and go during one
    watch; every interface's counts stay exact, a deleted one keeps its last
    figures marked gone, and changes land within 2 seconds."""
    with testbed.Netns("a") as na, testbed.Netns("b") as nb, testbed.Netns("c") as nc:
        ovs.add_bridge(BR)
        testbed.address_port(BR, "198.18.62.1")
        for ns, name, ip in (
            (na, "ovt-wa", "198.18.62.2"),
            (nb, "ovt-wb", "198.18.62.3"),
            (nc, "ovt-wc", "198.18.62.4"),
        ):
            testbed.veth(f"{name}0", ns, f"{name}1", None, ip)
        ovs.add_port(BR, "ovt-wa0", testbed.AS_UPLINK)
        ovs.add_port(BR, "ovt-wb0", testbed.AS_UPLINK)
        for ns in (na, nb):
            assert testbed.ping(ns, "198.18.62.1", 2) == 2
        # No RPS on the bridge's tap: each of its packets is one exact synchronous
        # receive (no backlog, no S1; S2 -> S3 measured).
        with Watch([BR, "--db", ovs.db_sock, "--protocol", "icmp"]) as w:
            assert testbed.ping(na, "198.18.62.1", 30) == 30
            assert testbed.ping(nb, "198.18.62.1", 20) == 20
            w.wait_for(lambda w: w.totals(BR).get("ip_rcv", 0) >= 50)
            assert w.totals("ovt-wa0")["enqueued"] == 30
            assert w.totals("ovt-wb0")["enqueued"] == 20

            changed = time.monotonic()
            ovs.del_port(BR, "ovt-wb0")
            ovs.add_port(BR, "ovt-wc0", testbed.AS_UPLINK)

            def applied(w):
                last = _ifaces(w.intervals[-1]) if w.intervals else {}
                return "ovt-wc0" in last and last["ovt-wb0"]["gone"]

            w.wait_for(applied, timeout_s=10)
            assert time.monotonic() - changed <= 2.0 + 0.5  # 2 s, plus one report interval
            assert testbed.ping(nc, "198.18.62.1", 25) == 25
            assert testbed.ping(na, "198.18.62.1", 15) == 15
            w.wait_for(lambda w: w.totals(BR).get("ip_rcv", 0) >= 90)
            summary = w.stop()
    s = _ifaces(summary)
    assert s["ovt-wa0"]["counters"]["enqueued"] == 45 and s["ovt-wa0"]["role"] == "uplink"
    assert s["ovt-wb0"]["counters"]["enqueued"] == 20 and s["ovt-wb0"]["gone"]
    assert s["ovt-wc0"]["counters"]["enqueued"] == 25 and not s["ovt-wc0"]["gone"]
    br = interface(summary, BR)
    assert br["role"] == "internal" and br["bridge"] == BR
    c = br["counters"]
    assert c["received_sync"] == c["ip_rcv"] == 90 and c["enqueued"] == c["received"] == 0
    assert c["flow_lookup_failures"] == 0
    assert br["stages"]["receive_to_ip"]["count"] == 90
    # all traffic to the bridge address was seen on the bridge port, and the
    # uplinks together carried exactly the same packets
    assert sum(s[n]["counters"]["received"] for n in ("ovt-wa0", "ovt-wb0", "ovt-wc0")) == 90
