"""ovslat installed as its users install it, each measuring real packets
exactly: the wheel into a fresh venv; the .deb with apt into a clean Debian 12
root (debootstrap, under .pkg-cache/ of this checkout; /proc, /sys, /dev and
the test namespaces are the host's); and the exporter unit's command, run
from that root as the unit's user with exactly the unit's capabilities."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ovslat.scenario import testbed
from tests.host.test_exporter import free_port
from tests.lab.vm import archive_entries
from tests.ovslat_proc import REPO

N = 100
PORT = 7009
IFACE = "ovt-pk0"
CACHE = REPO / ".pkg-cache"
SUITE = "bookworm"


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(REPO / "packaging" / "build.py"), "--dist", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("ovslat-*.whl")
    (deb,) = out.glob("ovslat_*_all.deb")
    return {"wheel": whl, "deb": deb}


@pytest.fixture
def host():
    """A client namespace sending to IFACE (198.18.70.1) in this namespace."""
    with testbed.Netns("pk") as ns:
        testbed.veth(IFACE, ns, "ovt-pk1", "198.18.70.1", "198.18.70.2")
        assert testbed.ping(ns, "198.18.70.1", 1) == 1
        yield ns


def measure(cmd: list[str], ns, cwd: str, env=None) -> dict:
    """Run `cmd` (an ovslat watch --format json), send N datagrams once it
    has attached, and return its summary's record of IFACE."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline() or "{}")
        assert first.get("type") == "start", (first, proc.stderr.read() if proc.stderr else "")
        testbed.send_udp(ns, "198.18.70.1", PORT, N)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = [json.loads(x) for x in out.splitlines() if '"summary"' in x][-1]
    (i,) = (i for i in summary["interfaces"] if i["name"] == IFACE)
    return {"backend": summary["backend"], "s3": summary["s3"], **i["counters"]}


def exact(c: dict) -> None:
    s3 = N if c["s3"] else 0
    assert (c["enqueued"], c["received"], c["ip_rcv"]) == (N, N, s3), c
    assert c["flow_lookup_failures"] == 0 and c["dropped"] == 0, c


def watch_args(duration: int = 6) -> list[str]:
    return ["watch", "-i", IFACE, "--protocol", "udp", "--format", "json",
            "--duration", str(duration)]  # fmt: skip


# ---- the wheel ---------------------------------------------------------------------


def test_wheel_in_a_fresh_venv(dist, host, tmp_path):
    venv = tmp_path / "venv"
    # bcc is Debian's (not on PyPI): seen through the system site packages
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)  # fmt: skip
    subprocess.run(
        [venv / "bin/pip", "install", "-q", "--disable-pip-version-check", dist["wheel"]],
        check=True,
        timeout=300,
    )
    py = str(venv / "bin/python")
    where = subprocess.run(
        [py, "-c", "from ovslat.data import data_dir; print(data_dir('bpf'))"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)) and (Path(where) / "ovslat.bpf.c").is_file(), where
    r = subprocess.run([py, "-m", "ovslat", "--help"], cwd=tmp_path, capture_output=True)
    assert r.returncode == 0
    exact(measure([str(venv / "bin/ovslat"), *watch_args()], host, str(tmp_path)))


# ---- the .deb in a clean Debian 12 root -----------------------------------------------


def _mirror() -> str:
    return archive_entries()[0][0]


@pytest.fixture(scope="module")
def pristine() -> Path:
    """A minimal Debian 12, made once per checkout (debootstrap: ~30 s)."""
    root = CACHE / SUITE
    if not (root / ".ready").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(root), _mirror()],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        (root / ".ready").touch()
    return root


@contextlib.contextmanager
def mounted(root: Path):
    """`root` as a clean system of its own on top of the pristine one (an
    overlay: every test run starts clean), with the host's kernel views."""
    work = Path(tempfile.mkdtemp(prefix="ovslat-pkg-"))
    upper, wd, merged = work / "upper", work / "work", work / "root"
    for d in (upper, wd, merged):
        d.mkdir()
    mounts = []
    os.makedirs("/run/netns", exist_ok=True)  # the test namespaces appear there later

    def mount(*args: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(target)], check=True)
        mounts.append(target)

    try:
        mount("-t", "overlay", "overlay", "-o",
              f"lowerdir={root},upperdir={upper},workdir={wd}", target=merged)  # fmt: skip
        mount("-t", "proc", "proc", target=merged / "proc")
        for d in ("/sys", "/dev", "/run/netns", "/usr/src"):
            mount("--rbind", d, target=merged / d.lstrip("/"))
        shutil.copy("/etc/resolv.conf", merged / "etc/resolv.conf")
        yield merged
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-R", "-l", str(m)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def chroot(root: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LANG": "C.UTF-8", "HOME": "/root"}  # fmt: skip
    return subprocess.run(
        ["chroot", str(root), *cmd], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def installed(pristine, dist):
    """The .deb installed with apt (its dependencies from Debian, nothing
    else) into a clean root."""
    with mounted(pristine) as root:
        shutil.copy(dist["deb"], root / "tmp/ovslat.deb")
        for step in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/ovslat.deb"],
        ):
            r = chroot(root, *step)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        yield root


def test_deb_installs_what_it_says(installed):
    root = installed
    for f in ("usr/bin/ovslat", "usr/bin/enqueue_to_iprec_latency",
              "usr/share/man/man1/ovslat.1.gz", "usr/share/bash-completion/completions/ovslat",
              "lib/systemd/system/ovslat-export.service", "etc/default/ovslat-export",
              "usr/lib/python3/dist-packages/ovslat/bpf/ovslat.bpf.c"):  # fmt: skip
        assert (root / f).exists(), f
    assert (root / "usr/bin/ovslat").read_text().startswith("#!/usr/bin/python3\n")
    man = chroot(root, "zcat", "/usr/share/man/man1/ovslat.1.gz").stdout
    assert man.startswith(".TH OVSLAT 1") and all(f".SS {c}\n" in man for c in ("watch", "export"))
    # bash completion: subcommands, then the options of the one typed
    script = "source /usr/share/bash-completion/completions/ovslat; COMP_WORDS=(ovslat {}); "
    script += "COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _ovslat; echo ${{COMPREPLY[@]}}"
    r = chroot(root, "bash", "-c", script.format("wa"))
    assert r.stdout.split() == ["watch"], r
    r = chroot(root, "bash", "-c", script.format("watch --thr"))
    assert set(r.stdout.split()) == {"--threshold-us", "--threshold-stage"}, r
    # nothing vendored: every module ovslat imports comes from a Debian package
    r = chroot(root, "python3", "-c", "import bcc, pyroute2, ovs, rich, yaml, prometheus_client;"
               "print(pyroute2.__file__, ovs.__file__)")  # fmt: skip
    assert r.returncode == 0 and r.stdout.count("/usr/lib/python3/dist-packages/") == 2, r
    r = chroot(root, "getent", "passwd", "ovslat")
    assert r.returncode == 0 and r.stdout.rstrip().endswith(("/usr/sbin/nologin", "/bin/false")), r


def test_deb_doctor_and_exact_watch(installed, host):
    root = installed
    r = chroot(root, "ovslat", "doctor")
    found = {ln[6:28].strip(): ln for ln in r.stdout.splitlines() if ln[:5].strip()}
    assert found["bcc"].startswith("OK") and "/usr/src/linux-headers-" in found["bcc"], r.stdout
    assert found["privileges"].startswith("OK"), r.stdout
    assert any(ln.startswith("OK    backend ") for ln in r.stdout.splitlines()), r.stdout
    exact(measure(["chroot", str(root), "ovslat", *watch_args()], host, "/"))


def _unit(root: Path) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((root / "lib/systemd/system/ovslat-export.service").read_text())
    return cp["Service"]


def test_unit_command_as_its_user_with_its_capabilities(installed, host):
    """ExecStart as systemd would run it: User=, AmbientCapabilities= and
    CapabilityBoundingSet= (setpriv), NoNewPrivileges, the environment file,
    and exact counts scraped from its /metrics."""
    root = installed
    svc = _unit(root)
    caps = [c.lower().removeprefix("cap_") for c in svc["AmbientCapabilities"].split()]
    assert caps and svc["CapabilityBoundingSet"].split() == svc["AmbientCapabilities"].split()
    assert "CAP_SYS_RESOURCE" not in svc["AmbientCapabilities"]  # LimitMEMLOCK= instead
    assert svc["NoNewPrivileges"] == "yes" and svc["User"] == "ovslat"
    exec_start = svc["ExecStart"].split()
    assert exec_start[:2] == ["/usr/bin/ovslat", "export"]
    port = free_port()
    # the environment file's variable, as the unit expands it
    args = ["-i", IFACE, "--protocol", "udp", "--listen", f"127.0.0.1:{port}"]
    grant = ",".join(f"+{c}" for c in caps)
    cmd = ["chroot", str(root), "setpriv", "--reuid=ovslat", "--regid=ovslat", "--init-groups",
           f"--inh-caps={grant}", f"--ambient-caps={grant}", f"--bounding-set=-all,{grant}",
           "--no-new-privs", "--", exec_start[0], "--verbose", exec_start[1], *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        assert "ovslat_enqueued_total" in _wait_metrics(url, proc)
        testbed.send_udp(host, "198.18.70.1", PORT, N)
        got = _wait_counts(url, proc)
        assert got == {"enqueued": N, "received": N, "ip_rcv": N}, got
        # chroot and setpriv exec: proc.pid is the exporter, as the unit's user
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
        assert uid and uid.group(1) != "0", status
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_metrics(url: str, proc, timeout_s: float = 120) -> str:
    """/metrics once the exporter has attached and published its first read."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited {proc.returncode}: {proc.stderr.read()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
            if f'interface="{IFACE}"' in text:
                return text
        time.sleep(0.2)
    raise AssertionError("exporter never served /metrics")


def _wait_counts(url: str, proc, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    got: dict = {}
    while time.monotonic() < deadline:
        text = _wait_metrics(url, proc)
        got = {}
        for name in ("enqueued", "received", "ip_rcv"):
            m = re.search(rf'^ovslat_{name}_total{{[^}}]*interface="{IFACE}"[^}}]*}} (\S+)', text,
                          re.M)  # fmt: skip
            got[name] = int(float(m.group(1))) if m else None
        if got == {"enqueued": N, "received": N, "ip_rcv": N}:
            return got
        time.sleep(0.5)
    return got
