"""`ovslat doctor` on this host (tracepoint-only kernel) and the seed-compatible
commands `enqueue_to_iprec_latency[_threshold]`, run as installed scripts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovslat.scenario import testbed
from tests.host.conftest import kernel_has_kprobes
from tests.ovslat_proc import OVSLAT, REPO, ovslat_prog_ids, programs_left

BIN = Path(sys.executable).parent
PORT = 7030


def doctor(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, *OVSLAT, "doctor", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp"},
    )


def lines_of(out: str) -> dict[str, str]:
    """check name -> whole line."""
    return {line[6:28].strip(): line for line in out.splitlines() if line[:5].strip()}


def test_doctor_on_this_host(auto_backend):
    before = ovslat_prog_ids()
    with testbed.OvsDaemons("netdev") as ovs, testbed.Netns("doc") as ns:
        ovs.add_bridge("ovt-dbr")
        testbed.veth("ovt-dc0", ns, "ovt-dc1", None, "198.18.90.2")
        ovs.add_port("ovt-dbr", "ovt-dc0")
        r = doctor("ovt-dbr", "--db", ovs.db_sock)
    assert r.returncode == 0, r.stdout + r.stderr
    found = lines_of(r.stdout)
    assert found["privileges"].startswith("OK")
    assert found["BTF"].startswith("OK") and "struct offsets read" in found["BTF"]
    assert found["bcc"].startswith("OK") and "headers" in found["bcc"]
    assert found["tracefs"].startswith("OK")
    # each backend really tried; what this kernel offers decides OK or WARN
    works = [b for b in ("fentry", "kprobe", "tracepoint") if found[f"backend {b}"][:2] == "OK"]
    for b in ("fentry", "kprobe", "tracepoint"):
        assert found[f"backend {b}"][:4] in ("OK  ", "WARN"), found[f"backend {b}"]
    if not kernel_has_kprobes():
        assert "CONFIG_KPROBES" in found["backend kprobe"] and "kprobe" not in works
    assert "tracepoint" in works  # tracepoints exist on every kernel ovslat supports
    assert "S3 = IPv4 PRE_ROUTING netfilter hook" in found["backend tracepoint"] or (
        "no S3" in found["backend tracepoint"]
    )
    assert found["backend auto"] == f"OK    backend auto           would pick {works[0]}"
    assert works[0] == auto_backend
    assert found["OVSDB"].startswith("OK") and "1 bridge(s): ovt-dbr (netdev)" in found["OVSDB"]
    assert found["bridge ovt-dbr"].startswith("OK") and "netdev datapath" in found["bridge ovt-dbr"]
    assert found["ovt-dc0"].startswith("OK") and "uplink, device ovt-dc0" in found["ovt-dc0"]
    assert "internal, device ovt-dbr" in found["ovt-dbr"] and found["ovt-dbr"].startswith("WARN")
    assert found["sysctl"].startswith("INFO") and "net.core.netdev_max_backlog=" in found["sysctl"]
    assert r.stdout.splitlines()[-1].startswith("ovslat can run here: 0 FAIL")
    assert not programs_left(before)  # every backend it tried was detached


def test_doctor_fails_without_root_and_on_an_unknown_bridge():
    r = doctor(prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
    assert r.returncode == 1, r.stdout + r.stderr
    found = lines_of(r.stdout)
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL  privileges")]
    for cap in ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYSLOG"):
        assert sum(f"lacks {cap}, needed to" in ln for ln in fails) == 1, r.stdout
    assert found["backends"].startswith("WARN") and "privileges above" in found["backends"]
    assert r.stdout.splitlines()[-1].startswith("ovslat cannot run here: 4 FAIL")
    r = doctor("br-nowhere", "--db", "unix:/nonexistent/db.sock")
    assert r.returncode == 1
    assert lines_of(r.stdout)["OVSDB"].startswith("FAIL  OVSDB                  cannot reach OVSDB")


@pytest.fixture
def host():
    with testbed.Netns("seed") as ns:
        testbed.veth("ovt-sd0", ns, "ovt-sd1", "198.18.91.1", "198.18.91.2")
        testbed.ping(ns, "198.18.91.1", 1)
        yield ns


def start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / script), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def attached(proc: subprocess.Popen) -> None:
    line = proc.stderr.readline()  # "ovslat: measuring ... Ctrl-C to stop"
    assert "measuring 1 interface(s) (ovt-sd0)" in line, line + proc.stderr.read()


def test_seed_latency_command(host):
    proc = start(
        "enqueue_to_iprec_latency",
        "--interface", "ovt-sd0", "--protocol", "udp", "--dst-port", str(PORT),
        "--interval", "0.5", "--duration", "4",
    )  # fmt: skip
    attached(proc)
    testbed.send_udp(host, "198.18.91.1", PORT, 40)
    testbed.send_udp(host, "198.18.91.1", PORT + 1, 7)  # filtered out
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # the seed's interval report, then the whole run
    assert "Enqueue → IP_RCV Latency Report (Interval: 0." in out
    assert "STAGE1_enqueue_to_backlog -> STAGE2___netif_receive_skb:" in out
    whole = out.split("SUMMARY: whole run")[1]
    assert "Enqueued packets:        40" in whole and "IP layer packets:        40" in whole


def test_seed_threshold_command(host):
    proc = start(
        "enqueue_to_iprec_latency_threshold",
        "--interface", "ovt-sd0", "--threshold-us", "0", "--protocol", "udp",
        "--dst-port", str(PORT), "--duration", "4",
    )  # fmt: skip
    attached(proc)
    time.sleep(0.2)
    testbed.send_udp(host, "198.18.91.1", PORT, 5)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # only the seed's event blocks (no interval reports), then the whole run
    assert out.count("HIGH LATENCY EVENT #") == 5
    events, whole = out.split("SUMMARY: whole run")
    assert "HIGH LATENCY EVENT #5" in events and "Latency Report (Interval" not in events
    assert "Destination: 198.18.91.1:7030" in out and "Kernel Stack Trace:" in out
    assert "Enqueued packets:        5" in whole
