"""`ovslat doctor` on this host (tracepoint-only kernel) and the seed-compatible
commands `enqueue_to_iprec_latency[_threshold]`, run as installed scripts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ovslat.scenario import testbed
from tests import seedfmt
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
        ovs.add_port("ovt-dbr", "ovt-dc0", testbed.AS_UPLINK)
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
    assert "S3 = IPv4: PRE_ROUTING netfilter hook" in found["backend tracepoint"] or (
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


def start(script: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        [*prefix, str(BIN / script), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(proc: subprocess.Popen, last: str) -> list[str]:
    """The banner, up to the seed's line that says it is measuring."""
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, "".join(lines) + proc.stderr.read()
        lines.append(line.rstrip("\n"))
        if line.startswith(last):
            return lines


def finish(proc: subprocess.Popen, timeout_s: float = 60) -> tuple[str, str]:
    """The rest of stdout (read through the same buffered file as ready(), which
    communicate() would bypass), stderr, once the process ends."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
    return out, err


RULE = "=" * 80


def test_seed_summary_tool_text_and_counts(host):
    """The summary tool's banner, interval reports, duration end and cumulative
    report, in its code's words; its port filter matches either port; the
    interval counters add up to the cumulative ones (never the run twice)."""
    proc = start(
        "enqueue_to_iprec_latency",
        "--interface", "ovt-sd0", "--protocol", "udp", "--dst-port", str(PORT),
        "--interval", "1", "--duration", "5",
    )  # fmt: skip
    banner = ready(proc, "Statistics will be displayed every")
    ifindex = socket.if_nametoindex("ovt-sd0")
    assert banner[:17] == [
        RULE,
        "Focused RX Latency Measurement: enqueue_to_backlog → ip_rcv",
        RULE,
        f"Target interface: ovt-sd0 (ifindex {ifindex})",
        "Protocol filter: UDP",
        f"Destination port: {PORT}",
        "Statistics interval: 1 seconds",
        "Total duration: 5 seconds",
        "High-latency event tracking: DISABLED (only histogram summary)",
        "",
        "Measuring 3 critical stages:",
        "  1. enqueue_to_backlog  - Queue insertion",
        "  2. __netif_receive_skb - Softirq processing (ASYNC BOUNDARY)",
        "  3. ip_rcv              - IP layer entry",
        RULE,
        "",
        "BPF program loaded successfully",
    ]
    assert banner[-3:] == ["", "Collecting latency data... Hit Ctrl-C to end.",
                           "Statistics will be displayed every 1 seconds"]  # fmt: skip
    testbed.send_udp(host, "198.18.91.1", PORT, 40)
    testbed.send_udp(host, "198.18.91.1", PORT + 1, 7, src_port=PORT)  # either port matches
    testbed.send_udp(host, "198.18.91.1", PORT + 2, 5, src_port=PORT + 3)  # filtered out
    out, err = finish(proc)
    assert proc.returncode == 0, err
    intervals = seedfmt.blocks(out, "Packet Counters (Interval):")
    (whole,) = seedfmt.blocks(out, "Packet Counters (Cumulative):")
    assert whole == {
        "Enqueued packets": 47, "Received packets": 47, "IP layer packets": 47,
        "Cross-CPU migrations": whole["Cross-CPU migrations"], "Parse failures": 0,
        "Flow lookup failures": 0,
    }  # fmt: skip
    assert sum(b["Enqueued packets"] for b in intervals) == 47
    assert sum(b["IP layer packets"] for b in intervals) == 47
    assert seedfmt.samples(out, "CUMULATIVE Enqueue") == [47, 47]
    # how it ends, line kinds as the tool's code prints them
    tail = seedfmt.kinds(out)  # what follows the banner
    end = tail.index("Duration limit reached (# seconds)")
    assert tail[end - 2 : end + 7] == [
        "", "", "Duration limit reached (# seconds)", "", "Final interval statistics:", "",
        RULE, "[T] Enqueue → IP_RCV Latency Report (Interval: #s)", RULE,
    ]  # fmt: skip
    cumulative = tail.index("[T] CUMULATIVE Enqueue → IP_RCV Latency Report (Total Duration: #s)")
    assert tail[cumulative - 4 : cumulative] == ["", "", "", RULE]
    assert tail[cumulative:] == [
        "[T] CUMULATIVE Enqueue → IP_RCV Latency Report (Total Duration: #s)", RULE, "",
        "Latency Measurements (Cumulative):", "-" * 80, "",
        "  STAGE1_enqueue_to_backlog -> STAGE2___netif_receive_skb:", "    Total samples: #",
        "    Latency distribution:", "      <row>",
        "    ^^^ CRITICAL ASYNC BOUNDARY (enqueue → receive) ^^^", "",
        "  STAGE2___netif_receive_skb -> STAGE3_ip_rcv:", "    Total samples: #",
        "    Latency distribution:", "      <row>", "", RULE,
        "Packet Counters (Cumulative):", "  Enqueued packets:        #",
        "  Received packets:        #", "  IP layer packets:        #",
        "  Cross-CPU migrations:    #", "  Parse failures:          #",
        "  Flow lookup failures:    #",
        *(["", "Backlog Queue Statistics (Cumulative):", "  Average queue depth: # packets",
           "  Total enqueue operations: #"] if "Backlog Queue Statistics (Cumulative):" in tail
          else []),
        RULE,
    ]  # fmt: skip
    # an interval with packets in it, as the code prints one
    first = tail.index("Packet Counters (Interval):")
    assert tail[first - 2 : first + 7] == [
        "", RULE, "Packet Counters (Interval):", "  Enqueued packets:        #",
        "  Received packets:        #", "  IP layer packets:        #",
        "  Cross-CPU migrations:    #", "  Parse failures:          #",
        "  Flow lookup failures:    #",
    ]  # fmt: skip
    assert "No latency data collected in this interval" in tail  # the quiet ones
    assert "ovslat" not in out  # nothing of ovslat's own without --extended


def test_seed_summary_tool_ctrl_c_debug_and_extended(host):
    """Ctrl-C ends with "Final interval statistics:" ... "Exiting...", exit 0;
    --debug prints the seed's code points; --extended adds ovslat's lines."""
    proc = start(
        "enqueue_to_iprec_latency", "--interface", "ovt-sd0", "--protocol", "udp",
        "--dst-port", str(PORT), "--interval", "30", "--debug", "--extended",
    )  # fmt: skip
    banner = ready(proc, "Statistics will be displayed every")
    assert (
        "Debug mode: ENABLED" in banner and "Total duration: Unlimited (run until Ctrl-C)" in banner
    )
    testbed.send_udp(host, "198.18.91.1", PORT, 20)
    testbed.send_udp(host, "198.18.91.1", PORT + 1, 3)  # filtered by port
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[-2:] == ["", "Exiting..."]
    body = out  # what follows the banner
    assert body.startswith("\n\n\nFinal interval statistics:\n\n" + RULE + "\n[")
    assert "\n    p50 " in body and "\n  In flight:               0  (enqueued" in body
    (final,) = seedfmt.blocks(out, "Packet Counters (Interval):")
    assert final["Enqueued packets"] == 20 and final["IP layer packets"] == 20
    debug = body.split("DEBUG STATISTICS (Stage Execution Flow)\n" + RULE + "\n", 1)[1]
    s1 = debug.split("STAGE1_enqueue_to_backlog:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = dict((r[2:27].strip(), int(r[29:])) for r in s1)
    # the seed's order, its PARSE_SUCCESS (after the filters), its PORT_FILTER
    assert list(rows) == [
        n
        for n in (
            "PROBE_ENTRY",
            "HANDLE_ENTRY",
            "PARSE_ENTRY",
            "PARSE_SUCCESS",
            "PORT_FILTER",
            "FLOW_CREATE",
        )
        if n in rows
    ]
    assert rows["PARSE_SUCCESS"] == rows["FLOW_CREATE"] == 20 and rows["PORT_FILTER"] == 3


def test_seed_threshold_tool_text_and_summary(host):
    proc = start(
        "enqueue_to_iprec_latency_threshold",
        "--interface", "ovt-sd0", "--threshold-us", "0", "--protocol", "udp",
        "--dst-port", str(PORT), "--duration", "4",
    )  # fmt: skip
    banner = ready(proc, "Waiting for high latency events... Hit Ctrl-C to end.")
    assert banner[:5] == [
        RULE, "Threshold-Based RX Latency Analysis", RULE,
        f"Target interface: ovt-sd0 (ifindex {socket.if_nametoindex('ovt-sd0')})",
        "Latency threshold: 0.000 ms (0 us)",
    ]  # fmt: skip
    testbed.send_udp(host, "198.18.91.1", PORT, 5)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert out.count("HIGH LATENCY EVENT #") == 5
    kinds = seedfmt.kinds(out)
    first = kinds.index("HIGH LATENCY EVENT ##")
    event = kinds[first - 2 : kinds.index(RULE, first + 2) + 1]
    cross = ["  ^^^ CROSS-CPU MIGRATION DETECTED ^^^"] if event[16:17] == [
        "  ^^^ CROSS-CPU MIGRATION DETECTED ^^^"] else []  # fmt: skip
    assert event == [
        "", RULE, "HIGH LATENCY EVENT ##", RULE, "Timestamp: T", "",
        "Latency: # ms (threshold: # ms)", "", "Flow Information:", "  Protocol: UDP",
        "  Source: A:#", "  Destination: A:#", "", "CPU Information:", "  Enqueue CPU: #",
        "  Receive CPU: #", *cross, "", "Timing Information:", "  Enqueue timestamp: # ns",
        "  Receive timestamp: # ns", "  Queue depth: # packets", "", "Kernel Stack Trace:",
        "  <frame>", RULE,
    ] or event[-3:] == ["", "Kernel Stack Trace: [unavailable]", RULE]  # fmt: skip
    summary = out.split("\n\n\nFinal summary:\n", 1)[1].splitlines()
    assert summary == [
        "", RULE, "SUMMARY STATISTICS", RULE, "Packet Counters:",
        "  Enqueued packets:        5", "  Received packets:        5",
        "  Threshold breaches:      5", "  Below threshold:         0",
        "  Parse failures:          0", "  Flow lookup failures:    0", "",
        "Total events captured:     5", "Threshold breach rate:     100.00%", RULE, "",
        "Exiting...",
    ]  # fmt: skip


def test_seed_threshold_tool_defaults_to_1000us():
    r = subprocess.run(
        [str(BIN / "enqueue_to_iprec_latency_threshold"), "--interface", "lo", "--duration", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Latency threshold: 1.000 ms (1000 us)" in r.stdout.splitlines()


@pytest.mark.parametrize(
    "script", ["enqueue_to_iprec_latency", "enqueue_to_iprec_latency_threshold"]
)
def test_seed_tools_root_check(script):
    """As the tools: the root check comes first (even before --help), on stdout, exit 1."""
    for args in (["--interface", "lo"], ["--help"]):
        r = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             str(BIN / script), *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (r.returncode, r.stdout, r.stderr) == (1, "This program must be run as root\n", "")
