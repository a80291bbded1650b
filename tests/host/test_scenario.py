"""`ovslat run / check / report` on real scenarios: the shipped demo end to end
(its own OVS, namespaces and traffic), a deliberately failing assertion, a
failed setup step, warm-up with a background workload, and a saved run
re-rendered by an unprivileged user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from ovslat.scenario import testbed
from tests.ovslat_proc import REPO, interface, ovslat_prog_ids, programs_left, run_ovslat

SVG = "{http://www.w3.org/2000/svg}"

SMALL = """\
version: 1
name: small
topology:
  bridge: {{name: ovt-sbr, address: 198.18.43.1/24}}
  hosts:
    - {{name: client, address: 198.18.43.2/24, port: ovt-sup0}}
target:
  interfaces: [ovt-sup0, ovt-sbr]
filters: {{protocol: udp, dst_port: 7002}}
interval_s: 0.5
{extra}
"""


def no_leftovers() -> None:
    links = testbed.sh("ip", "-o", "link", "show").stdout
    assert "ovsscn-" not in links and "ovt-s" not in links, links
    assert "ovt-client" not in testbed.sh("ip", "netns", "list").stdout


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "measurements.jsonl").read_text().splitlines()]


def svg_shapes(path: Path, cls: str) -> int:
    root = ET.parse(path).getroot()
    return sum(1 for r in root.iter(f"{SVG}rect") if r.get("class") == cls)


def test_demo_scenario_end_to_end(tmp_path, request):
    run_dir = tmp_path / "run"
    r = run_ovslat(["run", "scenarios/demo.yaml", "--out", str(run_dir)], timeout_s=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout and f"run directory: {run_dir}" in r.stdout
    assert r.stdout.count("PASS ") == 15

    recs = records(run_dir)
    assert [recs[0]["type"], recs[1]["type"]] == ["run", "start"]
    assert recs[-2]["type"] == "summary" and recs[-1]["type"] == "workload"
    summary = recs[-2]
    up = interface(summary, "ovsscn-up0")["counters"]
    br = interface(summary, "ovsscn-br")["counters"]
    # the uplink (NIC-like, no RPS: GRO's lists in place) carried the bridge
    # port's 2000 and the pod's 1000
    assert up["received_sync"] == up["segments"] == 3000 and br["enqueued"] == 2000, (up, br)
    assert up["enqueued"] == up["received"] == 0
    assert up["flow_lookup_failures"] == br["flow_lookup_failures"] == 0
    # the kernel's own loss on a netdev tap with RPS (README, "Known limits")
    assert 1960 <= br["received"] == br["ip_rcv"] <= 2000, br
    # the pod's eth0, found in its namespace through the bridge, and the VM's tap
    web = recs[0]["hosts"]["web"]
    pod = interface(summary, f"eth0@{web}")
    assert (pod["role"], pod["workload"]) == ("pod", "shop/web-0")
    assert pod["counters"]["enqueued"] == pod["counters"]["ip_rcv"] == 1400
    tap = interface(summary, "ovsscn-tap0")
    assert tap["role"] == "vm" and tap["workload"].startswith("vm:")
    assert tap["counters"]["received_sync"] == 400
    hops = {(h["from"], h["to"]): h for h in summary["hops"]}
    assert hops[("ovsscn-up0", "ovsscn-br")]["e2e"]["count"] == br["ip_rcv"]
    assert hops[("ovsscn-up0", f"eth0@{web}")]["e2e"]["count"] == 1000
    assert hops[("ovsscn-tap0", f"eth0@{web}")]["count"] == 400
    # 2000 datagrams at 500/s: several intervals, each with part of them
    intervals = [x for x in recs if x["type"] == "interval"]
    assert len(intervals) >= 3
    assert sum(interface(x, "ovsscn-up0")["counters"]["received_sync"] for x in intervals) == 3000
    assert [s["status"] for s in recs[-1]["steps"]] == [0] * 6

    result = json.loads((run_dir / "result.json").read_text())
    assert result["passed"] and len(result["checks"]) == 15
    assert "Enqueued packets:        2000" in (run_dir / "report.txt").read_text()
    md = (run_dir / "summary.md").read_text()
    assert md.startswith("# demo: PASSED")
    assert "| ovsscn-up0 | ovsscn-br | 2000 |" in md
    # plots a person can look at: one bar per used bucket, one cell per bucket and interval
    assert svg_shapes(run_dir / "distribution.svg", "bar") >= 5
    for name in ("ovsscn-br", f"eth0_{web}"):
        assert svg_shapes(run_dir / f"heatmap-{name}.svg", "cell") >= len(intervals)
    no_leftovers()

    # `ovslat report` re-renders the same files from the JSON lines, as nobody
    home = Path(tempfile.mkdtemp(prefix="ovt-report-"))  # /tmp: reachable by nobody
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    os.chmod(home, 0o755)
    copy = home / "copy"
    shutil.copytree(run_dir, copy)
    for f in ("summary.md", "result.json", "report.txt", "distribution.svg"):
        (copy / f).unlink()
    subprocess.run(["chown", "-R", "65534:65534", str(copy)], check=True)
    rr = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        + [sys.executable, "-m", "ovslat.cli", "report", str(copy)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": "/tmp"},
    )
    assert rr.returncode == 0, rr.stdout + rr.stderr
    assert "PASSED" in rr.stdout
    for f in ("summary.md", "result.json", "report.txt", "distribution.svg"):
        assert (copy / f).read_text() == (run_dir / f).read_text(), f


def test_failing_assertion_exits_1(tmp_path):
    scenario = tmp_path / "fails.yaml"
    scenario.write_text(
        SMALL.format(
            extra="""\
workload:
  - {netns: client, udp: {to: 198.18.43.1, port: 7002, count: 100}}
assert:
  - {interface: ovt-sup0, enqueued: {eq: 100}}
  - {interface: ovt-sup0, enqueued: {eq: 99}}
"""
        )
    )
    run_dir = tmp_path / "run"
    r = run_ovslat(["run", str(scenario), "--out", str(run_dir)], timeout_s=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"PASS {scenario}:14: ovt-sup0 enqueued == 100  (measured 100)" in r.stdout
    assert f"FAIL {scenario}:15: ovt-sup0 enqueued == 99  (measured 100)" in r.stdout
    assert "FAILED (1 of 2 assertions, 0 workload steps)" in r.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert not result["passed"] and [c["passed"] for c in result["checks"]] == [True, False]
    assert (run_dir / "summary.md").read_text().startswith("# small: FAILED")
    no_leftovers()


def test_failed_setup_step_tears_down(tmp_path):
    scenario = tmp_path / "setup.yaml"
    marker = tmp_path / "teardown-ran"
    scenario.write_text(
        SMALL.format(
            extra=f"""\
setup:
  - {{name: must fail, run: ["false"]}}
teardown:
  - {{run: [touch, {marker}]}}
workload:
  - {{run: ["true"]}}
"""
        )
    )
    r = run_ovslat(["run", str(scenario), "--out", str(tmp_path / "run")], timeout_s=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == "ovslat: setup step 'must fail' (line 12) gave 1"
    assert marker.exists()
    no_leftovers()


def test_warmup_and_background_workload(tmp_path):
    scenario = tmp_path / "bg.yaml"
    scenario.write_text(
        SMALL.format(
            extra="""\
warmup_s: 1
duration_s: 2
workload:
  - name: stream
    netns: client
    udp: {to: 198.18.43.1, port: 7002, pps: 200, duration_s: 30}
    background: true
assert:
  - {interface: ovt-sup0, received: {gt: 100}}
"""
        )
    )
    run_dir = tmp_path / "run"
    r = run_ovslat(["run", str(scenario), "--out", str(run_dir)], timeout_s=120)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = records(run_dir)
    warm = [x for x in recs if x["type"] == "interval" and x.get("phase") == "warmup"]
    measured = [x for x in recs if x["type"] == "interval" and "phase" not in x]
    assert len(warm) == 1 and interface(warm[0], "ovt-sup0")["counters"]["enqueued"] > 50
    summary = recs[-2]
    assert 1.8 <= summary["duration_s"] <= 3.0
    # the summary is the measured intervals only, not the warm-up
    assert interface(summary, "ovt-sup0")["counters"]["enqueued"] == sum(
        interface(x, "ovt-sup0")["counters"]["enqueued"] for x in measured
    )
    # the stream would have run 30 s: it was ended (by pid) when the run ended
    assert recs[-1]["steps"] == [
        {
            "name": "stream",
            "line": 14,
            "status": "stopped",
            "seconds": recs[-1]["steps"][0]["seconds"],
        }
    ]
    assert recs[-1]["steps"][0]["seconds"] < 10
    no_leftovers()


def test_check_attaches_detaches_and_undoes():
    before = ovslat_prog_ids()
    r = run_ovslat(["check", "scenarios/demo.yaml"], timeout_s=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("scenarios/demo.yaml: valid (version 1; 6 workload step(s), 15 ")
    assert lines[-2].startswith("attached: 5 interface(s) (ovsscn-br, ovsscn-pa0, eth0@ovt-web-")
    assert lines[-1] == "check passed: the scenario can run here"
    assert not programs_left(before)
    no_leftovers()


def test_unknown_netns_is_a_usage_error(tmp_path):
    scenario = tmp_path / "ns.yaml"
    scenario.write_text(SMALL.format(extra='workload:\n  - {netns: nowhere, run: ["true"]}\n'))
    r = run_ovslat(["run", str(scenario), "--out", str(tmp_path / "run")], timeout_s=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == (
        f"ovslat: error: {scenario}:12: netns 'nowhere' is neither a topology host nor a named "
        "network namespace (see `ip netns list`)"
    )
    no_leftovers()
