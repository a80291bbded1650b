"""The shipped demo scenario in the kernel lab: the OVS kernel datapath
(datapath: auto picks it where the module loads) and the fentry backend."""

from __future__ import annotations

import json

from tests.ovslat_proc import interface, run_ovslat


def test_demo_scenario_kernel_datapath(tmp_path):
    run_dir = tmp_path / "run"
    r = run_ovslat(["run", "scenarios/demo.yaml", "--out", str(run_dir)], timeout_s=600)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = [json.loads(x) for x in (run_dir / "measurements.jsonl").read_text().splitlines()]
    start, summary = recs[1], recs[-2]
    assert start["backend"] == "fentry"
    # the kernel datapath: every packet exact on every interface, the uplink
    # and the VM's tap with no ip_rcv (OVS takes them in its rx_handler), the
    # bridge port and the pod's eth0 with all
    up = interface(summary, "ovsscn-up0")["counters"]
    br = interface(summary, "ovsscn-br")["counters"]
    pod = interface(summary, f"eth0@{recs[0]['hosts']['web']}")["counters"]
    tap = interface(summary, "ovsscn-tap0")["counters"]
    # a NIC-like uplink (no RPS): GRO's lists received in place
    assert up["received_sync"] == up["segments"] == 3000 and up["ip_rcv"] == 0, up
    assert up["enqueued"] == up["received"] == 0, up
    assert br["enqueued"] == br["received"] == br["ip_rcv"] == 2000, br
    assert pod["enqueued"] == pod["received"] == pod["ip_rcv"] == 1400, pod
    assert tap["received_sync"] == 400 and tap["ip_rcv"] == tap["enqueued"] == 0, tap
    hops = {(h["from"], h["to"]): h["e2e"]["count"] for h in summary["hops"]}
    assert hops[("ovsscn-up0", "ovsscn-br")] == 2000
    assert json.loads((run_dir / "result.json").read_text())["passed"]
    assert (run_dir / "distribution.svg").stat().st_size > 1000
