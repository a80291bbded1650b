"""`ovslat doctor` on a full kernel (Debian's, in the lab): every backend is
tried for real, what the kernel lacks is named, and which header tree bcc
uses (the kernel's own on 6.1, the host's 6.1 tree on the others)."""

from __future__ import annotations

import os
import subprocess

from tests.lab.guest import HAS_DROP_REASONS, HAS_NETFILTER_LINK
from tests.ovslat_proc import OVSLAT, REPO


def test_doctor_full_kernel():
    r = subprocess.run(OVSLAT + ["doctor"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    found: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():
        if line[:5].strip():
            found.setdefault(line[6:28].strip(), []).append(line)
    one = {k: v[0] for k, v in found.items()}
    assert one["backend fentry"].startswith("OK"), one["backend fentry"]
    assert one["backend kprobe"].startswith("OK"), one["backend kprobe"]
    assert "S3 = IPv4: ip_rcv() entry" in one["backend kprobe"]
    tp = one["backend tracepoint"]
    if HAS_NETFILTER_LINK:
        assert tp.startswith("OK") and "S3 = IPv4: PRE_ROUTING" in tp, tp
    else:
        assert tp.startswith("WARN") and "no S3" in tp and "6.4" in tp, tp
    optional = " ".join(found.get("optional parts", []))
    assert ("drop reasons unavailable" in optional) != HAS_DROP_REASONS, r.stdout
    assert one["backend auto"].endswith("would pick fentry")
    assert one["BTF"].startswith("OK") and one["privileges"].startswith("OK")
    # the exact tree where the host has this kernel's headers, else the host's own
    own = os.path.isdir(f"/usr/src/linux-headers-{os.uname().release}")
    assert one["bcc"].startswith("OK"), one["bcc"]
    assert ("running kernel's own headers" in one["bcc"]) == own, one["bcc"]
    assert own or "takes every kernel struct offset from BTF" in one["bcc"], one["bcc"]
    assert r.stdout.splitlines()[-1].startswith("ovslat can run here: 0 FAIL")
