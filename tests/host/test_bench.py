"""The benchmark's smoke run (bench/bench.py with tiny packet counts), so it
cannot rot: every row is produced, packets are counted exactly by the
receiver and by each tool, and every figure is finite and sane."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
PACKETS = 3000


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    r = subprocess.run(
        [
            sys.executable,
            "bench/bench.py",
            "--packets",
            str(PACKETS),
            "--reps",
            "1",
            "--ifaces",
            "16,4096",
            "--window",
            "1",
            "--attach",
            "tracepoint",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text()), r.stdout


def test_every_row(bench):
    result, printed = bench
    labels = [row["label"] for row in result["rows"]]
    assert labels == [
        "no tracing",
        "bpftrace minimal.bt, 1 interface",
        "ovslat tracepoint, 1 interface(s)",
        "ovslat tracepoint, 4 interface(s)",
        "ovslat tracepoint, 16 interface(s)",
        "ovslat tracepoint, 4096 interface(s)",
        "ovslat tracepoint, 4 processes x 1 interface",
        "no tracing, VXLAN",
        "ovslat tracepoint, 1 interface(s), VXLAN",
    ]
    for label in labels:
        assert label in printed
    assert len(result["targets"]) == 5
    for goal in result["targets"]:
        assert goal["target"] in printed


def test_packets_counted_exactly(bench):
    result, _ = bench
    for row in result["rows"]:
        m = row["median"]
        assert m["sent"] == 2 * PACKETS, row["label"]
        assert m["received"] == 2 * PACKETS, row["label"]  # the receiver's IP InReceives
        if row["kind"] != "none":
            assert m["counted"] == 2 * PACKETS, row["label"]  # the tool's own count
        assert m["counted_exact"], row["label"]


def test_figures_are_sane(bench):
    result, _ = bench
    rows = {row["label"]: row["median"] for row in result["rows"]}
    for none in (rows.pop("no tracing"), rows.pop("no tracing, VXLAN")):
        assert none["pps"] > 0 and none["bpf_ns_per_packet"] == 0
    for label, m in rows.items():
        for key in ("pps", "pps_vs_none", "bpf_ns_per_packet", "ns_vs_bpftrace"):
            assert math.isfinite(m[key]) and m[key] > 0, (label, key, m[key])
        assert m["cpu_ms_per_interval"] is not None and m["cpu_ms_per_interval"] >= 0, label
        assert m["map_memlock_bytes"] > 0, label
        # every packet runs at least one program per stage the tool hooks
        assert m["bpf_calls_per_packet"] >= 2, label
        assert m["bpf_ns_per_packet"] < 1_000_000, label
    for label, m in rows.items():
        if label.startswith("ovslat") and "processes" not in label:
            assert math.isfinite(m["ns_vs_ovslat_1"]), label
    bigger = rows["ovslat tracepoint, 4096 interface(s)"]["map_memlock_bytes"]
    assert bigger > rows["ovslat tracepoint, 1 interface(s)"]["map_memlock_bytes"]
    for goal in result["targets"]:
        assert goal["value"] is not None and math.isfinite(goal["value"]), goal
