"""The live table on a node's worth of interfaces, as a person sees it: 125
veth pairs (250 interfaces, the peers in namespaces of ours) measured by the
real `ovslat watch` in a 120x40 terminal (tmux). The view fits the terminal,
no row wraps, the interfaces with traffic come first, `s` changes the order
and `q` ends the run."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import OVSLAT, REPO

PAIRS, NAMESPACES = 125, 5
WIDTH, HEIGHT = 120, 40
NET = ipaddress.ip_network("198.18.128.0/17")  # a /30 per pair
# pair -> ping interval (s): 500, 200 and 100 packets/s, each way
BUSY = {7: 0.002, 42: 0.005, 99: 0.01}
TRAFFIC_S = 30  # the pings' bound; they are stopped once the test is done
BORDERS = ("┏┓", "┃┃", "┡┩", "││", "└┘")

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux")


def addr(pair: int, host: int) -> str:
    return str(NET.network_address + 4 * pair + host)


@pytest.fixture
def pairs():
    """{pair: (root-side name, peer label name@netns, its Netns)} for PAIRS veth
    pairs, ovt-lv<N> here and ovt-lw<N> in one of NAMESPACES namespaces; all
    removed afterwards, even when building them fails halfway."""
    with contextlib.ExitStack() as stack:
        spaces = [stack.enter_context(testbed.Netns(f"lvns{k}")) for k in range(NAMESPACES)]
        out = {}
        for n in range(PAIRS):
            ns = spaces[n % NAMESPACES]
            testbed.veth(f"ovt-lv{n}", ns, f"ovt-lw{n}", addr(n, 1), addr(n, 2), prefix=30)
            out[n] = (f"ovt-lv{n}", f"ovt-lw{n}@{ns.name}", ns)
        yield out


class Pane:
    """`ovslat watch` in a tmux session of its own, read back with capture-pane."""

    def __init__(self, args: list[str]):
        self.session = f"ovslat-scale-{time.monotonic_ns()}"
        self.dir = tempfile.mkdtemp(prefix="ovslat-live-")
        self.pidfile = os.path.join(self.dir, "pid")
        # 250 -i arguments: a script, not a tmux command line. The inner shell
        # execs ovslat, so the pid it writes is ovslat's own. COLUMNS/LINES from
        # the test runner's environment would override the pane's size.
        watch = " ".join(shlex.quote(a) for a in [*OVSLAT, "watch", *args])
        script = os.path.join(self.dir, "run.sh")
        with open(script, "w") as f:
            exec_recording_pid = f"sh -c 'echo $$ > {self.pidfile}; exec \"$@\"' sh"
            f.write(
                f"env -u COLUMNS -u LINES {exec_recording_pid} {watch}\necho EXIT=$?\nsleep 60\n"
            )
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.session, "-x", str(WIDTH), "-y", str(HEIGHT)]
            + ["-c", str(REPO), f"sh {script}"],
            check=True,
        )

    def size(self) -> tuple[int, int]:
        out = self._tmux("display-message", "-p", "#{pane_width} #{pane_height}")
        w, h = out.split()
        return int(w), int(h)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def keys(self, key: str) -> None:
        self._tmux("send-keys", key)

    def wait(self, pred, timeout_s: float, what: str) -> str:
        """The first screen for which pred holds (polled: a terminal gives no
        readiness signal of its own)."""
        deadline = time.monotonic() + timeout_s
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if pred(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{what} not seen in {timeout_s}s; the screen:\n{screen}")

    def _tmux(self, cmd: str, *args: str) -> str:
        return subprocess.run(
            ["tmux", cmd, "-t", self.session, *args], capture_output=True, text=True, check=True
        ).stdout

    def close(self) -> None:
        """Ends ovslat by its pid if it still runs, then the session."""
        with contextlib.suppress(OSError, ValueError):
            with open(self.pidfile) as f:
                pid = int(f.read())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                mine = b"ovslat" in f.read()
            if mine:
                os.kill(pid, signal.SIGTERM)
                try:
                    testbed.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 15)
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def view(screen: str) -> list[str]:
    """The live view's lines: from its header line to its footer line."""
    lines = screen.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("ovslat backend")]
    feet = [i for i, line in enumerate(lines) if line.startswith("q or Ctrl-C to quit")]
    assert heads and feet and heads[-1] < feet[-1], screen
    return lines[heads[-1] : feet[-1] + 1]


def rows(lines: list[str]) -> list[list[str]]:
    """The interface table's rows, as cells."""
    start = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith("└"))
    return [[c.strip() for c in line[1:-1].split("│")] for line in lines[start + 1 : end]]


def names(rs: list[list[str]]) -> list[str]:
    return [r[0].split()[0] for r in rs]


def assert_fits(screen: str) -> list[str]:
    lines = view(screen)
    assert len(lines) <= HEIGHT, screen
    for line in lines:
        assert len(line) <= WIDTH, line
        if line[0] in "┏┃┡│└":
            # a table line is one whole row: a wrapped one would end elsewhere
            assert (line[0] + line[-1]) in BORDERS and len(line) == WIDTH, line
        else:
            assert line.startswith(
                ("ovslat backend", "… ", "S2→S3", "latest slow packets", "q or Ctrl-C")
            ), line
    assert not any(line.strip() == "..." for line in lines)  # rich's overflow mark
    return lines


def hidden(lines: list[str]) -> int:
    (more,) = (line for line in lines if "more interfaces:" in line)
    return int(more.split()[1].replace(",", ""))


def test_250_interfaces_in_120x40(pairs):
    busy = {n: pairs[n][:2] for n in BUSY}
    busy_names = {name for ends in busy.values() for name in ends}
    # no --max-ifaces: the default slots are sized from the 250 interfaces named
    args = ["--attach", "tracepoint", "--interval", "0.5"]
    for root_side, peer, _ in pairs.values():
        args += ["-i", root_side, "-i", peer]
    pane = Pane(args)
    pings: list[subprocess.Popen] = []
    try:
        assert pane.size() == (WIDTH, HEIGHT)
        pane.wait(lambda s: "ovslat backend tracepoint" in s, 60, "the live view")
        for n, interval in BUSY.items():
            ns = pairs[n][2]
            count = str(int(TRAFFIC_S / interval))
            argv = ns.argv("ping", "-n", "-q", "-c", count, "-i", str(interval), addr(n, 1))
            pings.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))

        def busy_on_top(screen: str) -> bool:
            with contextlib.suppress(AssertionError, StopIteration, ValueError):
                return set(names(rows(view(screen)))[: len(busy_names)]) == busy_names
            return False

        screen = pane.wait(busy_on_top, 20, "the busy interfaces on top")
        lines = assert_fits(screen)
        assert "sort p99" in lines[0]
        rs = rows(lines)
        top, rest = rs[: len(busy_names)], rs[len(busy_names) :]
        assert all(r[1] != "0" and (r[3], r[6]) != ("-", "-") for r in top), top
        assert all(r[1] == "0" for r in rest), rest  # and the idle ones after them
        assert 20 <= len(rs) < 2 * PAIRS
        assert hidden(lines) == 2 * PAIRS - len(rs)

        pane.keys("s")
        screen = pane.wait(lambda s: "sort pps" in s, 10, "the pps order")
        lines = assert_fits(screen)
        rs = rows(lines)
        rate = [int(r[1].replace(",", "")) for r in rs]
        assert rate == sorted(rate, reverse=True), rate
        order = names(rs)
        # 500, 200, 100 packets/s: the pairs in that order, both ends of each
        assert [set(order[k : k + 2]) for k in (0, 2, 4)] == [set(busy[n]) for n in BUSY]
        assert hidden(lines) == 2 * PAIRS - len(rs)

        pane.keys("s")
        screen = pane.wait(lambda s: "sort name" in s, 10, "the name order")
        rs = rows(assert_fits(screen))
        assert names(rs) == [f"ovt-lv{n}" for n in range(len(rs))]

        pane.keys("q")
        screen = pane.wait(lambda s: "EXIT=" in s, 30, "the end of the run")
        assert "EXIT=0" in screen, screen
    finally:
        for p in pings:
            if p.poll() is None:
                p.terminate()
            p.wait()
        pane.close()
