"""Bad input, table-driven: each case runs the real command and must end as
exactly one line on stderr naming the problem, exit status 2, no traceback,
and no BPF program of ovslat left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import REPO, ovslat_prog_ids, programs_left

OVSLAT = [sys.executable, "-m", "ovslat.cli"]
LATENCY = [
    sys.executable,
    "-c",
    "import sys; from ovslat.commands.seedcompat import latency_main as m; sys.exit(m())",
]
THRESHOLD = [
    sys.executable,
    "-c",
    "import sys; from ovslat.commands.seedcompat import threshold_main as m; sys.exit(m())",
]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NO_DB = "unix:/nonexistent/ovslat-test/db.sock"
NO_TREE = "/nonexistent/ovslat-test/linux"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private OVS with one bridge, a scenario with a YAML error, a run
    directory that is not one, a port in use."""
    d = tmp_path_factory.mktemp("bad")
    (d / "broken.yaml").write_text("version: 1\ntarget: [\n")
    (d / "typo.yaml").write_text("version: 1\ntarget: {interfaces: [lo]}\nwarmup: 1\n")
    (d / "notarun").mkdir()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with testbed.OvsDaemons("netdev") as ovs:
        ovs.add_bridge("ovt-badbr")
        yield {"dir": d, "db": ovs.db_sock, "busy": busy.getsockname()[1]}
    busy.close()


# (id, argv with {dir} {db} {busy} placeholders, what the one line must contain)
CASES = [
    ("no-target", ["watch"], "nothing to watch: name a bridge"),
    ("unknown-iface", ["watch", "-i", "ovt-nope0"], "unknown interface 'ovt-nope0'"),
    ("unknown-netns", ["watch", "-i", "lo@ovt-nons"], "ovt-nons"),
    ("unknown-bridge", ["watch", "ovt-nobr", "--db", "{db}"], "bridge 'ovt-nobr' not found"),
    ("ovsdb-down", ["watch", "br-int", "--db", NO_DB], "cannot reach OVSDB at " + NO_DB),
    ("ovsdb-bad-remote", ["watch", "br-int", "--db", "carrier-pigeon:x"], "is not an OVSDB remote"),
    ("discover-down", ["discover", "br-int", "--db", NO_DB], "cannot reach OVSDB"),
    ("discover-unknown", ["discover", "ovt-nobr", "--db", "{db}"], "not found"),
    ("bad-src-ip", ["watch", "-i", "lo", "--src-ip", "10.0.0.300"], "--src-ip"),
    ("bad-dst-prefix", ["watch", "-i", "lo", "--dst-ip", "2001:2::/129"], "--dst-ip"),
    ("dst-host-bits", ["watch", "-i", "lo", "--dst-ip", "198.18.0.1/24"], "198.18.0.0/24"),
    ("bad-family", ["watch", "-i", "lo", "--family", "5"], "--family"),
    (
        "family-conflict",
        ["watch", "-i", "lo", "--family", "6", "--src-ip", "198.18.0.1"],
        "--src-ip",
    ),
    ("port-high", ["watch", "-i", "lo", "--dst-port", "65536"], "--dst-port"),
    ("port-negative", ["watch", "-i", "lo", "--src-port", "-1"], "--src-port"),
    ("port-word", ["watch", "-i", "lo", "--dst-port", "http"], "--dst-port"),
    ("protocol", ["watch", "-i", "lo", "--protocol", "sctp"], "sctp"),
    ("backend-unknown", ["watch", "-i", "lo", "--attach", "ebpf"], "--attach"),
    ("backend-kprobe", ["watch", "-i", "lo", "--attach", "kprobe"], "kprobe is not usable"),
    ("backend-fentry", ["watch", "-i", "lo", "--attach", "fentry"], "fentry is not usable"),
    ("interval-negative", ["watch", "-i", "lo", "--interval", "-1"], "--interval must be > 0"),
    ("interval-zero", ["watch", "-i", "lo", "--interval", "0"], "--interval must be > 0"),
    ("interval-word", ["watch", "-i", "lo", "--interval", "soon"], "is not a number"),
    ("duration-zero", ["watch", "-i", "lo", "--duration", "0"], "--duration must be > 0"),
    ("flows-zero", ["watch", "-i", "lo", "--max-flows", "0"], "--max-flows must be between"),
    ("flows-memory", ["watch", "-i", "lo", "--max-flows", "16777216"], "memory"),
    ("ifaces-huge", ["watch", "-i", "lo", "--max-ifaces", "100000"], "--max-ifaces must be"),
    ("ifaces-few", ["watch", "-i", "lo", "-i", "ovt-x", "--max-ifaces", "1"], "--max-ifaces is 1"),
    ("only-no-bridge", ["watch", "-i", "lo", "--only", "uplink"], "--pod need a BRIDGE"),
    ("only-bad-role", ["watch", "ovt-badbr", "--db", "{db}", "--only", "nic"], "unknown role"),
    ("threshold-negative", ["watch", "-i", "lo", "--threshold-us", "-5"], "--threshold-us"),
    (
        "threshold-transit",
        ["watch", "-i", "lo", "--threshold-us", "5", "--threshold-stage", "transit"],
        "two or more",
    ),
    ("events-zero", ["watch", "-i", "lo", "--max-events-per-sec", "0"], "--max-events-per-sec"),
    ("events-word", ["watch", "-i", "lo", "--max-events-per-sec", "many"], "is not an integer"),
    ("format", ["watch", "-i", "lo", "--format", "xml"], "--format"),
    ("subcommand", ["wacth", "-i", "lo"], "invalid choice: 'wacth'"),
    ("demo-pps", ["demo", "--pps", "0"], "--pps"),
    ("run-missing", ["run", "{dir}/missing.yaml"], "cannot read scenario"),
    ("run-yaml", ["run", "{dir}/broken.yaml"], "broken.yaml:3: not valid YAML"),
    ("check-typo", ["check", "{dir}/typo.yaml"], "typo.yaml:3: warmup: unknown field 'warmup'"),
    ("run-dir-not-empty", ["run", "scenarios/demo.yaml", "--out", "{dir}"], "is not empty"),
    ("report-not-a-run", ["report", "{dir}/notarun"], "is not a run directory"),
    ("export-listen", ["export", "-i", "lo", "--listen", "localhost"], "--listen"),
    ("export-port-busy", ["export", "-i", "lo", "--listen", "127.0.0.1:{busy}"], "in use"),
    ("seed-no-interface", ["@latency"], "--interface"),
    ("seed-bad-ip", ["@latency", "--interface", "lo", "--src-ip", "1.2.3"], "--src-ip"),
    ("seed-bad-threshold", ["@threshold", "--interface", "lo", "--threshold-us", "x"], "-us"),
    ("not-root", ["@nobody", "watch", "-i", "lo"], "lacks CAP_BPF, CAP_PERFMON"),
    ("ovsdb-denied", ["@nobody", "discover", "ovt-badbr", "--db", "{db}"], "permission denied"),
    ("caps-short", ["@bpfonly", "watch", "-i", "lo"], "lacks CAP_NET_ADMIN, CAP_SYSLOG: run"),
    (
        "header-tree",
        ["@badtree", "watch", "-i", "lo"],
        f"BCC_KERNEL_SOURCE={NO_TREE} is not a kernel source tree",
    ),
]


@pytest.mark.parametrize("case, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_one_line_exit_2(env, case, argv, expected):
    argv = [a.format(dir=env["dir"], db=env["db"], busy=env["busy"]) for a in argv]
    extra_env = {}
    if argv and argv[0] == "@badtree":
        argv, extra_env = argv[1:], {"BCC_KERNEL_SOURCE": NO_TREE}
    if argv and argv[0] == "@latency":
        cmd = LATENCY + argv[1:]
    elif argv and argv[0] == "@threshold":
        cmd = THRESHOLD + argv[1:]
    elif argv and argv[0] == "@nobody":
        cmd = NOBODY + OVSLAT + argv[1:]
    elif argv and argv[0] == "@bpfonly":  # a user given some of the capabilities only
        caps = "+bpf,+perfmon"
        grant = [f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set=-all,{caps}"]
        cmd = NOBODY + grant + ["--"] + OVSLAT + argv[1:]
    else:
        cmd = OVSLAT + argv
    before = ovslat_prog_ids()
    r = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": "/tmp", **extra_env},
    )
    lines = r.stderr.splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith(("ovslat: error: ", "enqueue_to_iprec_latency")), lines[0]
    assert expected in lines[0], lines[0]
    assert r.stdout == ""
    assert not programs_left(before)


def test_enough_cases():
    assert len(CASES) >= 30
