"""Boots the kernel lab once and runs tests/lab/guest inside it; one host test
per guest test reports its outcome, with the guest's own output on failure."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.lab import vm

pytestmark = [pytest.mark.lab, pytest.mark.root]
GUEST = Path(__file__).resolve().parent / "guest"
TIMEOUT_S = 1800


def guest_test_ids() -> list[str]:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            str(GUEST),
        ],
        capture_output=True,
        text=True,
        cwd=vm.REPO,
        env={**os.environ, "OVSLAT_IN_LAB": "1"},
    )
    ids = [line.split("::", 1)[1] for line in r.stdout.splitlines() if "::" in line]
    if not ids:
        raise RuntimeError(f"no guest tests collected: {r.stdout}{r.stderr}")
    return ids


@pytest.fixture(scope="session")
def lab_results(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the kernel lab needs root")
    run_dir = vm.CACHE / "runs" / f"pytest-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    junit = run_dir / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = (
        f"OVSLAT_IN_LAB=1 {sys.executable} -m pytest -p no:cacheprovider -v -rs "
        f"--junitxml={junit} tests/lab/guest"
    )
    rc, output = vm.run_captured(cmd, TIMEOUT_S, run_dir)
    cases = {}
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            cases[case.get("name")] = case
    return rc, output, cases


@pytest.mark.parametrize("guest_test", guest_test_ids())
def test_in_lab(lab_results, guest_test):
    rc, output, cases = lab_results
    name = guest_test
    case = cases.get(name)
    if case is None:
        pytest.fail(
            f"guest test {name} did not run (lab rc={rc}); guest output:\n" f"{output[-6000:]}",
            pytrace=False,
        )
    for tag in ("failure", "error"):
        bad = case.find(tag)
        if bad is not None:
            pytest.fail(
                f"in the lab guest: {bad.get('message')}\n{bad.text or ''}\n"
                f"--- guest output (tail) ---\n{output[-4000:]}",
                pytrace=False,
            )
    skipped = case.find("skipped")
    if skipped is not None:
        pytest.fail(f"skipped in the lab guest: {skipped.get('message')}", pytrace=False)
