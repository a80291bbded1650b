"""Boots each lab kernel once and runs tests/lab/guest inside it (and, on
6.12, the host tests that exercise BPF behaviour, under kprobes and fentry
there); one host test per guest test and kernel reports its outcome, with the
guest's own output on failure. Then README's kernel table is held against
what this run measured.

OVSLAT_LAB_KERNELS=6.12 (comma-separated) limits the run to some kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.lab import matrix, vm

pytestmark = [pytest.mark.lab, pytest.mark.root]
GUEST = Path(__file__).resolve().parent / "guest"
TIMEOUT_S = 1800
KERNELS = [k.strip() for k in os.environ.get("OVSLAT_LAB_KERNELS", ",".join(vm.KERNELS)).split(",")]
# Host tests that also run in a guest: the BPF-behaviour ones, on the newest
# kernel, where auto picks fentry and the seed's kprobes exist (this VM has
# tracepoints only). Chosen to fit TCG's budget: each compile is ~30 s there.
HOST_TESTS = {
    "6.12": [
        "tests/host/test_hops.py",
        "tests/host/test_threshold.py::test_drops_are_attributed_and_reconciled",
        "tests/host/test_ipv6.py::test_ipv6_hop_across_an_ovs_bridge",
    ]
}


# Guest tests (files or test ids) run on one kernel only, to fit TCG's
# budget (the whole CI under 45 minutes): the kernel datapath's VXLAN and
# Geneve (every kernel loads the same tunnel parser in every other guest
# test); the demo scenario (the same kernel datapath, fentry and OVSDB
# discovery as test_watch_bridge_kernel_datapath, which runs on each); pods
# and a VM under kprobe (kprobes on the kernel datapath run on each in
# test_ovs_kernel_datapath, pods under fentry on each).
ONLY_ON = {
    "tests/lab/guest/test_tunnels.py": "6.1",
    "tests/lab/guest/test_scenario.py": "6.1",
    "tests/lab/guest/test_backends.py::test_pods_and_vm_kernel_datapath[kprobe-kprobe]": "5.10",
}


def _paths(kernel: str) -> list[str]:
    left_out = [
        f"--deselect={path}" if "::" in path else f"--ignore={path}"
        for path, k in ONLY_ON.items()
        if k != kernel
    ]
    return [str(GUEST.relative_to(vm.REPO)), *left_out] + HOST_TESTS.get(kernel, [])


def _collect(paths: list[str]) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
        capture_output=True,
        text=True,
        cwd=vm.REPO,
        env={**os.environ, "OVSLAT_IN_LAB": "1"},
    )
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    if not ids:
        raise RuntimeError(f"no guest tests collected: {r.stdout}{r.stderr}")
    return ids


def _params() -> list:
    out = []
    for kernel in KERNELS:
        for nodeid in _collect(_paths(kernel)):
            out.append(pytest.param(kernel, nodeid, id=f"{kernel}:{nodeid.split('/')[-1]}"))
    return out


def _junit_key(nodeid: str) -> str:
    """tests/host/test_hops.py::test_x[rps] -> tests.host.test_hops::test_x[rps],
    as junit names it (classname, name)."""
    path, _, name = nodeid.partition("::")
    return path.removesuffix(".py").replace("/", ".") + "::" + name


_RESULTS: dict[str, tuple[int, str, dict, list[dict], float]] = {}


def lab_results(kernel: str):
    if os.geteuid() != 0:
        pytest.skip("the kernel lab needs root")
    if kernel not in _RESULTS:
        run_dir = vm.CACHE / "runs" / f"pytest-{os.getpid()}-{kernel}"
        run_dir.mkdir(parents=True, exist_ok=True)
        junit = run_dir / "junit.xml"
        for f in (junit, run_dir / "matrix.jsonl"):
            f.unlink(missing_ok=True)
        cmd = (
            f"OVSLAT_IN_LAB=1 {sys.executable} -m pytest -p no:cacheprovider -v -rs "
            f"--junitxml={junit} {' '.join(_paths(kernel))}"
        )
        t0 = time.monotonic()
        rc, output = vm.run_captured(cmd, TIMEOUT_S, run_dir, kernel)
        took = time.monotonic() - t0
        print(f"lab {kernel}: guest run took {took:.0f} s")
        cases = {}
        if junit.exists():
            for case in ET.parse(junit).iter("testcase"):
                cases[f"{case.get('classname')}::{case.get('name')}"] = case
        rows = []
        if (run_dir / "matrix.jsonl").exists():
            rows = [
                {**json.loads(x), "lab": kernel}
                for x in (run_dir / "matrix.jsonl").read_text().splitlines()
            ]
            matrix.save(kernel, rows)
        _RESULTS[kernel] = (rc, output, cases, rows, took)
    return _RESULTS[kernel]


@pytest.mark.parametrize("kernel, nodeid", _params())
def test_in_lab(kernel, nodeid):
    rc, output, cases, _, _ = lab_results(kernel)
    case = cases.get(_junit_key(nodeid))
    if case is None:
        pytest.fail(
            f"{nodeid} did not run in the {kernel} guest (lab rc={rc}); guest output:\n"
            f"{output[-6000:]}",
            pytrace=False,
        )
    for tag in ("failure", "error"):
        bad = case.find(tag)
        if bad is not None:
            pytest.fail(
                f"in the {kernel} lab guest: {bad.get('message')}\n{bad.text or ''}\n"
                f"--- guest output (tail) ---\n{output[-4000:]}",
                pytrace=False,
            )
    skipped = case.find("skipped")
    if skipped is not None:
        pytest.fail(f"skipped in the {kernel} lab guest: {skipped.get('message')}", pytrace=False)


def test_readme_kernel_table_is_what_the_lab_measured():
    """README's kernel x backend table, row for row, from this run's guests."""
    rows = []
    for kernel in KERNELS:
        rows += lab_results(kernel)[3]
    assert rows, "no guest recorded a row"
    want = matrix.rows_by_kernel(matrix.render(rows))
    have = matrix.rows_by_kernel(matrix.readme_table())
    for kernel, lines in want.items():
        assert have.get(kernel) == lines, (
            f"README's table for {kernel} differs from this lab run; "
            "update it with: python3 tests/lab/matrix.py --write"
        )
