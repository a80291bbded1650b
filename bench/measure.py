"""What the bench measures with: a sender/receiver pair of namespaces joined by
a veth, interfaces to fill ovslat's map, the C packet source, and the tools
under test (ovslat processes, bpftrace) seen through /proc: their BPF programs'
run time (bpf_stats), their maps' memlock and their CPU time.

Everything is named ovb-* and lives in namespaces the bench creates, so other
users of the machine (ovt-*/ovx-* tests) and their traffic stay out of the
figures that can be kept apart: packet counts are read in the receiver's
namespace; only BPF run time is global (a tracepoint fires for every packet
of the machine), which the calls-per-packet column makes visible.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from ovslat.scenario import testbed  # noqa: E402

SENDER_ADDR, RECEIVER_ADDR = "198.19.99.2", "198.19.99.1"
PORT = 9
VXLAN_PORT, VNI = 4789, 42  # the encapsulated rows' outer port and tunnel
RX_IFACE, TX_IFACE = "ovb-r0", "ovb-s0"  # ovb-r0 receives: netif_rx -> backlog
STATS = "/proc/sys/kernel/bpf_stats_enabled"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def dummy_name(i: int) -> str:
    return f"ovb-d{i:04d}"


@contextlib.contextmanager
def bpf_stats():
    """kernel.bpf_stats_enabled=1 for the run (run_time_ns/run_cnt count only
    then), restored after."""
    with open(STATS) as f:
        saved = f.read().strip()
    _saved_stats[:] = [saved]
    with open(STATS, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(STATS, "w") as f:
            f.write(saved)


@contextlib.contextmanager
def bpf_stats_paused():
    """Back to the value it had before the bench: run-time accounting reads
    the clock twice per program run, which a packet-rate figure must not pay."""
    with open(STATS, "w") as f:
        f.write(_saved_stats[0] if _saved_stats else "0")
    try:
        yield
    finally:
        with open(STATS, "w") as f:
            f.write("1")


_saved_stats: list[str] = []


def build_sender(out_dir: str) -> str:
    """Compile udp_blast.c here and now: the binary matches this machine."""
    exe = os.path.join(out_dir, "udp_blast")
    r = subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", exe, str(BENCH / "udp_blast.c")],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"bench: gcc failed:\n{r.stderr}")
    return exe


class _Netns(testbed.Netns):
    def __init__(self, label: str):
        super().__init__(label)
        self.name = f"ovb-{label}-{secrets.token_hex(3)}"


class Topology:
    """ovb-snd (sender) --veth--> ovb-rcv (ovb-r0 + N spare interfaces, the
    sink socket). Static neighbours and no IPv6: the only packets on ovb-r0
    are the ones sent."""

    def __init__(self, n_spare: int, blast: str):
        self.n_spare = n_spare
        self.blast = blast
        self.snd = _Netns("snd")
        self.rcv = _Netns("rcv")
        self._stack = contextlib.ExitStack()
        self.sinks: list[subprocess.Popen] = []
        self.spare_kind = ""

    def __enter__(self) -> Topology:
        try:
            self._stack.enter_context(self.snd)
            self._stack.enter_context(self.rcv)
            self._stack.callback(self._stop_sink)
            self._build()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _build(self) -> None:
        rcv, snd = self.rcv, self.snd
        testbed.sh(
            "ip", "-n", rcv.name, "link", "add", RX_IFACE, "type", "veth",
            "peer", "name", TX_IFACE, "netns", snd.name,
        )  # fmt: skip
        for ns, dev, addr in ((rcv, RX_IFACE, RECEIVER_ADDR), (snd, TX_IFACE, SENDER_ADDR)):
            testbed.sysctl(f"net.ipv6.conf.{dev}.disable_ipv6", "1", ns.name)
            ns.run("ip", "addr", "add", f"{addr}/24", "dev", dev)
            ns.run("ip", "link", "set", dev, "up")
        # no ARP during a measurement: each side knows the other's MAC for good
        for ns, dev, peer_ns, peer_dev, peer_addr in (
            (rcv, RX_IFACE, snd, TX_IFACE, SENDER_ADDR),
            (snd, TX_IFACE, rcv, RX_IFACE, RECEIVER_ADDR),
        ):
            mac = json.loads(peer_ns.run("ip", "-j", "link", "show", peer_dev).stdout)[0]["address"]
            ns.run(
                "ip", "neigh", "replace", peer_addr, "lladdr", mac, "dev", dev, "nud", "permanent"
            )
        self._add_spares()
        # one sink per port sent to: nothing travels back (no ICMP port unreachable)
        for port in (PORT, VXLAN_PORT):
            sink = subprocess.Popen(
                rcv.argv(self.blast, "sink", RECEIVER_ADDR, str(port)),
                stdout=subprocess.PIPE,
                text=True,
            )
            self.sinks.append(sink)
            if sink.stdout.readline().strip() != "ready":
                raise SystemExit("bench: the sink socket did not start")

    def _add_spares(self) -> None:
        """Interfaces that only fill the map. dummy or ifb, whichever this
        kernel has (this project's VM kernel has no CONFIG_DUMMY)."""
        if not self.n_spare:
            return
        for kind in ("dummy", "ifb"):
            probe = self.rcv.run("ip", "link", "add", dummy_name(1), "type", kind, check=False)
            if probe.returncode == 0:
                self.spare_kind = kind
                break
        else:
            raise SystemExit("bench: the kernel has neither dummy nor ifb interfaces")
        batch = "".join(
            f"link add {dummy_name(i)} type {kind}\n" for i in range(2, self.n_spare + 1)
        )
        with tempfile.NamedTemporaryFile("w", prefix="ovb-", suffix=".batch") as f:
            f.write(batch)
            f.flush()
            self.rcv.run("ip", "-batch", f.name)

    def _stop_sink(self) -> None:
        for sink in self.sinks:
            if sink.poll() is None:
                sink.terminate()
                sink.wait(timeout=5)

    def ip_in_receives(self) -> int:
        """IP InReceives of the receiver's namespace (read through the sink's
        /proc/PID/net, which is that namespace's)."""
        with open(f"/proc/{self.sinks[0].pid}/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Ip:")]
        head, values = lines
        return int(values[head.index("InReceives")])

    def send(self, count: int, cpu: int | None, vxlan: bool = False) -> tuple[int, float]:
        """`count` datagrams back to back from the sender namespace, each a
        VXLAN packet holding one when `vxlan`; (packets sent, seconds the
        sender took)."""
        argv = [self.blast, "send", RECEIVER_ADDR, str(VXLAN_PORT if vxlan else PORT), str(count)]
        r = self.snd.run(*argv, *(["0", str(VNI)] if vxlan else []), cpu=cpu)
        m = re.search(r"sent=(\d+) elapsed_ns=(\d+)", r.stdout)
        return int(m.group(1)), int(m.group(2)) / 1e9


# ---- the tools, seen through /proc ---------------------------------------------


def _fdinfo(pid: int, kind: str) -> list[dict[str, str]]:
    """fdinfo of every bpf-prog / bpf-map file descriptor pid holds."""
    out = []
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{fd}") != f"anon_inode:bpf-{kind}":
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    out.append(
                        dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
                    )
            except OSError:
                continue
    return out


@dataclass(frozen=True)
class ProgStats:
    """prog id -> (run_time_ns, run_cnt) of the programs some processes hold
    (each program once, however many descriptors point at it)."""

    by_id: dict[int, tuple[int, int]]

    @property
    def run_time_ns(self) -> int:
        return sum(t for t, _ in self.by_id.values())

    @property
    def run_cnt(self) -> int:
        return sum(c for _, c in self.by_id.values())

    def __sub__(self, before: ProgStats) -> ProgStats:
        return ProgStats(
            {
                i: (t - before.by_id.get(i, (0, 0))[0], c - before.by_id.get(i, (0, 0))[1])
                for i, (t, c) in self.by_id.items()
            }
        )


def prog_stats(pids: list[int]) -> ProgStats:
    seen: dict[int, tuple[int, int]] = {}
    for pid in pids:
        for info in _fdinfo(pid, "prog"):
            seen[int(info["prog_id"])] = (
                int(info.get("run_time_ns", 0)),
                int(info.get("run_cnt", 0)),
            )
    return ProgStats(seen)


def prog_names(ids) -> dict[int, str]:
    """Program names by id, from bpftool (fdinfo has none); {} without bpftool."""
    try:
        r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
        progs = json.loads(r.stdout or "[]")
    except (OSError, ValueError):
        return {}
    wanted = set(ids)
    return {p["id"]: p.get("name", "?") for p in progs if p["id"] in wanted}


def map_memlock(pids: list[int]) -> int:
    seen = {}
    for pid in pids:
        for info in _fdinfo(pid, "map"):
            seen[info["map_id"]] = int(info.get("memlock", 0))
    return sum(seen.values())


def cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes, seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


class Tool:
    """A measuring process: started, ready, counted, stopped."""

    name = "tool"

    def __init__(self, argv: list[str], **kw):
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._err, text=True, **kw
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, timeout_s: float) -> str:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            raise RuntimeError(f"{self.name}: nothing from it in {timeout_s:.0f}s") from None
        if line is None:
            rc = self.proc.wait()
            raise RuntimeError(f"{self.name} exited (rc={rc}): {self.stderr()[-2000:]}")
        return line

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class OvslatWatch(Tool):
    """The real CLI, `ovslat watch --format json`, run in the receiver's
    network namespace so that thousands of -i names resolve there directly
    (IFACE@NETNS would enter the namespace once per name)."""

    def __init__(self, netns: str, ifaces: list[str], backend: str, interval_s: float, slots: int):
        self.name = f"ovslat watch ({len(ifaces)} interface(s))"
        # nsenter --net, not `ip netns exec`: that one also remounts /sys in
        # a new mount namespace, where bcc cannot find tracefs to detach kprobes
        argv = ["nsenter", f"--net=/var/run/netns/{netns}"]
        argv += [sys.executable, "-m", "ovslat.cli", "watch"]
        argv += ["--format", "json", "--interval", str(interval_s), "--attach", backend]
        argv += ["--max-ifaces", str(max(64, slots))]
        for iface in ifaces:
            argv += ["-i", iface]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        super().__init__(argv, cwd=REPO, env=env)
        self.intervals = 0

    def ready(self, timeout_s: float) -> dict:
        return self._until("start", timeout_s)

    def _until(self, kind: str, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            # interval records of 4096 interfaces are megabytes: look at the type only
            head = re.match(r'\{"type":\s*"(\w+)"', line)
            if head and head.group(1) == "interval":
                self.intervals += 1
            if head and head.group(1) == kind:
                return json.loads(line) if kind != "interval" else None

    def wait_intervals(self, n: int, timeout_s: float) -> None:
        while self.intervals < n:
            self._until("interval", timeout_s)

    def stop(self, iface: str, timeout_s: float = 60) -> int:
        """SIGTERM; the summary's `enqueued` count of iface."""
        self.proc.send_signal(signal.SIGTERM)
        summary = self._until("summary", timeout_s)
        self.proc.wait(timeout=timeout_s)
        for i in summary["interfaces"]:
            if i["name"] == iface:
                return i["counters"]["enqueued"]
        raise RuntimeError(f"{self.name}: no {iface} in its summary")


class Bpftrace(Tool):
    """bench/minimal.bt on one interface."""

    name = "bpftrace"

    def __init__(self, iface: str):
        # -B line: bpftrace's stdout is a pipe here, fully buffered otherwise
        super().__init__(["bpftrace", "-B", "line", str(BENCH / "minimal.bt"), iface])

    def ready(self, timeout_s: float) -> None:
        # not "Attaching N probes...": bpftrace prints it before attaching, and
        # the first packets of a run went uncounted (5711 of 6000 on a first run)
        while not self.next_line(timeout_s).startswith("ready"):
            pass

    def count(self) -> int:
        """@packets, read from bpftrace's own map (AT_packets, a per-CPU array)
        while it runs: the count does not depend on how bpftrace exits."""
        ids = [info["map_id"] for info in _fdinfo(self.proc.pid, "map")]
        for map_id in ids:
            r = subprocess.run(
                ["bpftool", "-j", "map", "dump", "id", map_id], capture_output=True, text=True
            )
            show = subprocess.run(
                ["bpftool", "-j", "map", "show", "id", map_id], capture_output=True, text=True
            )
            if json.loads(show.stdout or "{}").get("name") != "AT_packets":
                continue
            return sum(
                int.from_bytes(bytes(int(b, 16) for b in v["value"]), "little")
                for entry in json.loads(r.stdout)
                for v in entry["values"]
            )
        raise RuntimeError(f"bpftrace: no AT_packets map among its maps {ids}")

    def stop(self, iface: str, timeout_s: float = 30) -> int:
        """The @packets count, then SIGINT. bpftrace 0.17 once sat past 30 s
        after a SIGINT (CI, the bench's bpftrace row): its exit is not what the
        bench measures, so a bpftrace that does not leave is killed, not waited
        for, and its count is the one read before."""
        packets = self.count()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"bpftrace: still running {timeout_s:.0f}s after SIGINT; killed", file=sys.stderr)
            self.kill()
        return packets
