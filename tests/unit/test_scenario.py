"""Scenario files: every shipped one validates; malformed ones fail with the
file, line and field named, as one UserError line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovslat.errors import UserError
from ovslat.scenario import schema

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))

BASE = """\
version: 1
topology:
  bridge: {name: br-x, address: 198.18.50.1/24}
  hosts:
    - {name: client, address: 198.18.50.2/24, port: up0}
target:
  interfaces: [up0, br-x]
filters: {protocol: udp, dst_port: 7000}
workload:
  - netns: client
    udp: {to: 198.18.50.1, port: 7000, count: 10}
assert:
  - {interface: "*", enqueued: {eq: 10}}
"""


def parse(text: str) -> schema.Scenario:
    return schema.parse(text, Path("s.yaml"))


def test_shipped_scenarios_exist():
    names = {p.stem for p in SHIPPED}
    assert {"demo", "pattern4", "threshold"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenario_validates(path):
    sc = schema.load(path)
    assert sc.workload and sc.checks
    assert sc.target.bridge or sc.target.interfaces


def test_filters_take_networks_of_both_families():
    sc = parse(
        BASE.replace(
            "{protocol: udp, dst_port: 7000}",
            "{dst_ip: [198.18.50.0/24, '2001:2::/48'], src_ip: 2001:2::7, family: all}",
        )
    )
    assert sc.filters.dst_ip == ("198.18.50.0/24", "2001:2::/48")
    assert sc.filters.src_ip == ("2001:2::7",) and sc.filters.family == "all"


def test_base_parses_to_what_it_says():
    sc = parse(BASE)
    assert sc.name == "s"
    assert sc.topology.bridge == "br-x"
    assert str(sc.topology.hosts[0].address) == "198.18.50.2/24"
    assert sc.target.interfaces == ("up0", "br-x")
    assert sc.filters.as_dict()["dst_port"] == 7000
    (step,) = sc.workload
    assert step.kind == "udp" and step.udp.count == 10 and step.netns == "client"
    (check,) = sc.checks
    assert (check.interface, check.metric, check.op, check.value) == ("*", "enqueued", "eq", 10)
    assert check.line == 13
    assert sc.duration_s is None and sc.warmup_s == 0


def test_demo_uplink_is_nic_like():
    hosts = schema.load(REPO / "scenarios" / "demo.yaml").topology.hosts
    (client,) = (h for h in hosts if not h.pod)
    assert client.nic and not parse(BASE).topology.hosts[0].nic


def test_argv_numbers_become_strings_and_shell_is_explicit():
    sc = parse(
        BASE
        + "setup:\n  - run: [ping, -c, 3, 198.18.50.1]\n"
        + "teardown:\n  - shell: echo done | cat\n"
    )
    assert sc.setup[0].argv == ("ping", "-c", "3", "198.18.50.1")
    assert sc.teardown[0].kind == "shell" and sc.teardown[0].shell == "echo done | cat"


def replace(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


# (scenario text, what the one-line error must contain)
MALFORMED = [
    ("", "s.yaml:1: the file is empty"),
    ("version: [1\n", "s.yaml:2: not valid YAML"),
    ("- a\n- b\n", "s.yaml:1: top level: a scenario must be a mapping"),
    (replace("version: 1", "version: 2"), "s.yaml:1: version: unsupported version 2"),
    (BASE.replace("version: 1\n", ""), "s.yaml:1: top level: missing field 'version'"),
    (
        BASE + "duraton_s: 5\n",
        "s.yaml:14: duraton_s: unknown field 'duraton_s' (did you mean 'duration_s'?)",
    ),
    (BASE + "version: 1\n", "s.yaml:14: version: duplicate key"),
    (
        replace("target:\n  interfaces: [up0, br-x]\n", ""),
        "s.yaml:1: top level: missing field 'target'",
    ),
    (
        replace("interfaces: [up0, br-x]", "interfaces: []"),
        "s.yaml:6: target: name a bridge: or interfaces:",
    ),
    (
        replace("interfaces: [up0, br-x]", "interfaces: [an-interface-name-too-long]"),
        "s.yaml:7: target.interfaces[0]: 'an-interface-name-too-long' is not an interface name",
    ),
    (
        replace("interfaces: [up0, br-x]", "interfaces: [up0]\n  only: [uplink]"),
        "s.yaml:6: target: only:/exclude:/pods: select from a bridge",
    ),
    (
        replace("interfaces: [up0, br-x]", "bridge: br-x\n  only: [uplinks]"),
        "s.yaml:8: target.only: unknown role 'uplinks'",
    ),
    (replace("dst_port: 7000", "dst_port: 70000"), "s.yaml:8: filters.dst_port:"),
    (replace("protocol: udp", "protocol: sctp"), "s.yaml:8: filters.protocol:"),
    (
        replace("filters: {protocol: udp, dst_port: 7000}", "filters: {src_ip: 300.1.1.1}"),
        "s.yaml:8: filters.src_ip:",
    ),
    (
        replace("{protocol: udp, dst_port: 7000}", "{dst_ip: [2001:2::/48], family: 4}"),
        "s.yaml:8: filters.dst_ip: --dst-ip is IPv6 but --family 4 is not",
    ),
    (
        replace("{protocol: udp, dst_port: 7000}", "{family: 5}"),
        "s.yaml:8: filters.family: unknown address family",
    ),
    (
        BASE + "backend: ebpf\n",
        "s.yaml:14: backend: 'ebpf' is not one of auto, fentry, kprobe, tracepoint",
    ),
    (BASE + "interval_s: -1\n", "s.yaml:14: interval_s: must be between 0.05 and 3600, got -1"),
    (BASE + "interval_s: soon\n", "s.yaml:14: interval_s: must be a number, got a string ('soon')"),
    (BASE + "max_flows: 1.5\n", "s.yaml:14: max_flows: must be an integer"),
    (BASE + "threshold: {stage: transit}\n", "s.yaml:14: threshold: missing field 'us'"),
    (
        BASE + "threshold: {us: 10, stage: nowhere}\n",
        "s.yaml:14: threshold.stage: 'nowhere' is not one of",
    ),
    (
        replace("address: 198.18.50.1/24", "address: 198.18.50.1"),
        "s.yaml:3: topology.bridge.address: '198.18.50.1' is not an IPv4 address with a prefix",
    ),
    (
        replace("address: 198.18.50.2/24", "address: 198.18.51.2/24"),
        "s.yaml:5: topology.hosts[0].address: 198.18.51.2/24 is not in the bridge's network "
        "198.18.50.0/24",
    ),
    (
        BASE.replace("  bridge: {name: br-x", "  datapath: dpdk\n  bridge: {name: br-x"),
        "s.yaml:3: topology.datapath: 'dpdk' is not one of auto, system, netdev",
    ),
    (
        replace("port: up0}", "port: br-x}"),
        "s.yaml:5: topology.hosts[0]: port name 'br-x' is used twice",
    ),
    (
        replace(
            "    udp: {to: 198.18.50.1, port: 7000, count: 10}",
            "    udp: {to: 198.18.50.1, port: 7000}",
        ),
        "s.yaml:11: workload[0].udp: give count:",
    ),
    (
        replace("udp: {to: 198.18.50.1,", "udp: {to: host-b,"),
        "s.yaml:11: workload[0].udp.to: 'host-b' is not an IPv4 address",
    ),
    (
        replace("port: 7000, count: 10}", "port: 7000, count: 10, duration_s: 3}"),
        "s.yaml:11: workload[0].udp.duration_s: duration_s: goes with pps:",
    ),
    (
        replace("    udp: {to: 198.18.50.1, port: 7000, count: 10}", "    run: ping -c 3 x"),
        "s.yaml:11: workload[0].run: must be a command as a non-empty list",
    ),
    (
        replace("    udp: {to: 198.18.50.1, port: 7000, count: 10}", "    run: [ping, {c: 3}]"),
        "s.yaml:11: workload[0].run[1]: an argument must be a string or a number",
    ),
    (
        replace(
            "    udp: {to: 198.18.50.1, port: 7000, count: 10}",
            "    run: [true]\n    shell: 'true'",
        ),
        "s.yaml:10: workload[0]: a step has exactly one of run:",
    ),
    (
        replace("  - netns: client\n", "  - background: yes\n    netns: client\n"),
        "s.yaml:9: workload: with no foreground workload step, set duration_s:",
    ),
    (
        replace("  - netns: client\n", "  - background: 1\n    netns: client\n"),
        "s.yaml:10: workload[0].background: must be true or false",
    ),
    (replace("  - netns: client\n", "  - "), "s.yaml:10: workload: a udp: step needs netns:"),
    (
        BASE + "setup:\n  - {run: [x], background: true}\n",
        "s.yaml:15: setup[0].background: only workload steps can run in the background",
    ),
    (
        replace('{interface: "*", enqueued: {eq: 10}}', "{enqueued: {eq: 10}}"),
        "s.yaml:13: assert[0]: a check names exactly one of interface:",
    ),
    (
        replace('{interface: "*", enqueued: {eq: 10}}', "{interface: up0}"),
        "s.yaml:13: assert[0]: a check needs a metric",
    ),
    (
        replace("enqueued: {eq: 10}", "p99_us: {lt: 10}"),
        "s.yaml:13: assert[0].p99_us: p99_us needs stage:",
    ),
    (
        replace("enqueued: {eq: 10}", "stage: receive, p99_us: {lt: 10}"),
        "s.yaml:13: assert[0].stage: 'receive' is not one of enqueue_to_receive, receive_to_ip",
    ),
    (
        replace("enqueued: {eq: 10}", "enqueued: {equals: 10}"),
        "s.yaml:13: assert[0].enqueued.equals: unknown field 'equals'",
    ),
    (
        replace("enqueued: {eq: 10}", "enqueued: {gt: 1, lt: 9}"),
        "s.yaml:13: assert[0].enqueued: give one comparison",
    ),
    (
        replace("enqueued: {eq: 10}", "enqueued: {eq: ten}"),
        "s.yaml:13: assert[0].enqueued.eq: must be a number",
    ),
    (
        replace(
            '{interface: "*", enqueued: {eq: 10}}',
            "{hop: {from: up0, to: br-x}, received: {eq: 1}}",
        ),
        "s.yaml:13: assert[0].received: received is an interface counter",
    ),
    (
        replace('{interface: "*", enqueued: {eq: 10}}', "{hop: {from: up0}, count: {eq: 1}}"),
        "s.yaml:13: assert[0].hop: missing field 'to'",
    ),
    (
        replace("port: up0}", "port: up0, nic: yes please}"),
        "s.yaml:5: topology.hosts[0].nic: must be true or false",
    ),
    (
        BASE.split("assert:")[0] + "assert:\n  bad: 1\n",
        "s.yaml:12: assert: assert must be a list of checks",
    ),
]


@pytest.mark.parametrize("text, error", MALFORMED, ids=[m[1][:60] for m in MALFORMED])
def test_malformed_scenario_is_one_precise_line(text, error):
    with pytest.raises(UserError) as e:
        parse(text)
    message = str(e.value)
    assert error in message, message
    assert "\n" not in message


def test_enough_malformed_cases():
    assert len(MALFORMED) >= 20


def test_unreadable_file(tmp_path):
    with pytest.raises(UserError, match=r"cannot read scenario .*nope.yaml: No such file"):
        schema.load(tmp_path / "nope.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not a text file"):
        schema.load(binary)
