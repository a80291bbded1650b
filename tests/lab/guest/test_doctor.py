"""`ovslat doctor` on a full kernel (Debian's, in the lab): every backend is
tried for real and the kernel datapath module is there."""

from __future__ import annotations

import subprocess

from tests.ovslat_proc import OVSLAT, REPO


def test_doctor_full_kernel():
    r = subprocess.run(OVSLAT + ["doctor"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    found = {line[6:28].strip(): line for line in r.stdout.splitlines() if line[:5].strip()}
    assert found["backend fentry"].startswith("OK"), found["backend fentry"]
    assert found["backend kprobe"].startswith("OK"), found["backend kprobe"]
    assert "S3 = ip_rcv() entry" in found["backend kprobe"]
    # Linux 6.1: no BPF netfilter hook yet, so the tracepoint backend has no S3
    assert found["backend tracepoint"].startswith("WARN"), found["backend tracepoint"]
    assert "no S3" in found["backend tracepoint"] and "6.4" in found["backend tracepoint"]
    assert found["backend auto"].endswith("would pick fentry")
    assert found["BTF"].startswith("OK") and found["privileges"].startswith("OK")
    assert r.stdout.splitlines()[-1].startswith("ovslat can run here: 0 FAIL")
