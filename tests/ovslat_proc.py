"""Runs the real `ovslat` command as a subprocess and reads its JSON lines,
the way a user's script would. Used by host tests and kernel-lab tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OVSLAT = [sys.executable, "-m", "ovslat.cli"]


class Watch:
    """`ovslat watch --format json ...` running; records arrive on a queue."""

    def __init__(
        self,
        args: list[str],
        interval: float = 0.2,
        timeout_s: float = 60.0,
        env: dict[str, str] | None = None,
    ):
        cmd = OVSLAT + ["watch", "--format", "json", "--interval", str(interval), *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.records: queue.Queue = queue.Queue()
        self.intervals: list[dict] = []
        self.events: list[dict] = []
        self.summary: dict | None = None
        self.start: dict | None = None
        self.stderr = ""
        threading.Thread(target=self._pump, daemon=True).start()
        self.start = self._next(timeout_s, "start")

    def _pump(self):
        for line in self.proc.stdout:
            self.records.put(json.loads(line))
        self.records.put(None)

    def _next(self, timeout_s: float, want: str | None = None) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                rec = self.records.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.dump_stacks()
                self.kill()
                raise AssertionError(
                    f"ovslat gave no {want or 'record'} in {timeout_s}s: " f"{self._stderr()}"
                ) from None
            if rec is None:
                raise AssertionError(
                    f"ovslat exited (rc={self.proc.wait()}) before a {want or 'record'}: "
                    f"{self._stderr()}"
                )
            if rec["type"] == "interval":
                self.intervals.append(rec)
            if rec["type"] == "event":
                self.events.append(rec)
            if rec["type"] == "summary":
                self.summary = rec
            if want is None or rec["type"] == want:
                return rec

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        self.stderr = self.stderr or self.proc.stderr.read()
        return self.stderr

    def totals(self, name: str) -> dict:
        """Counters of interface `name` (NAME@NETNS, or NAME), summed over the
        intervals seen so far."""
        out: dict[str, int] = {}
        for rec in self.intervals:
            for i in rec["interfaces"]:
                if name in (label(i), i["name"]):
                    for k, v in i["counters"].items():
                        out[k] = out.get(k, 0) + v
        return out

    def settle(self, pred, timeout_s: float) -> bool:
        """Read intervals until pred(self) holds or timeout_s has passed (by
        at most one interval): False is an answer, not a failure, and ovslat
        keeps running (wait_for's timeout ends it)."""
        deadline = time.monotonic() + timeout_s
        while not pred(self):
            if time.monotonic() >= deadline:
                return False
            self._next(30.0, "interval")  # one comes every --interval
        return True

    def wait_for(self, pred, timeout_s: float = 20.0) -> None:
        """Read intervals until pred(self) holds (a readiness signal, not a sleep)."""
        deadline = time.monotonic() + timeout_s
        while not pred(self):
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise AssertionError
                self._next(left, "interval")
            except AssertionError:
                last = self.intervals[-1] if self.intervals else None
                raise AssertionError(
                    f"condition not reached in {timeout_s}s; totals: "
                    f"{self._all_totals()}; last interval: {last}"
                ) from None

    def _all_totals(self) -> dict:
        names = {i["name"] for rec in self.intervals for i in rec["interfaces"]}
        return {n: self.totals(n) for n in sorted(names)}

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> dict:
        """Signal ovslat and return its summary record; it must exit 0."""
        self.proc.send_signal(sig)
        while self.summary is None:
            self._next(timeout_s, "summary")
        rc = self.proc.wait(timeout=timeout_s)
        assert rc == 0, f"ovslat exited {rc}: {self._stderr()}"
        return self.summary

    def dump_stacks(self) -> None:
        """A stuck ovslat prints its threads' Python stacks on SIGUSR1 (cli.main):
        ask before killing it, so that the failure says where it was."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)  # faulthandler writes at once; no signal says it is done

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def label(i: dict) -> str:
    """An interface of a JSON record as ovslat labels it: NAME, NAME@NETNS."""
    return f"{i['name']}@{i['netns']}" if i.get("netns") else i["name"]


def interface(record: dict, name: str) -> dict:
    """The interface labelled `name` (NAME or NAME@NETNS); else the one named so."""
    found = [i for i in record["interfaces"] if label(i) == name]
    (one,) = found or [i for i in record["interfaces"] if i["name"] == name]
    return one


def run_ovslat(args: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        OVSLAT + args, cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )


# Names bcc gives ovslat's programs (bpf/ovslat.bpf.c), on every backend.
OVSLAT_PROGRAMS = (
    "learn_napi_poll",
    "drop_kfree_skb",
    "tp_",  # the tracepoints of every backend, tp_btf or raw
    "napi_gro_",
    "napi_list_entry",
    "netfilter_ip_rcv",
    "enqueue_to_backlog",
    "__netif_receive_skb",
    "ip_rcv",
    "kprobe_enqueue",
    "kprobe_receive",
    "kprobe_ip",
)


def ovslat_progs() -> dict[int, dict]:
    """The loaded BPF programs that are ovslat's, by name: id -> bpftool's
    description (name, type, ...)."""
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {
        p["id"]: p
        for p in json.loads(out)
        if any(p.get("name", "").startswith(n) for n in OVSLAT_PROGRAMS)
    }


def ovslat_prog_ids() -> set[int]:
    return set(ovslat_progs())


def programs_left(before: set[int], timeout_s: float = 5.0) -> set[int]:
    """ovslat's programs loaded now that were not in `before`, once the kernel
    has had up to timeout_s to release them: a program goes when its last
    reference does, and the kernel may drop that one after the process that
    loaded it has closed its descriptors (links released from work queues and
    RCU callbacks). Polls the kernel's own list; returns at once when clean."""
    deadline = time.monotonic() + timeout_s
    while (left := ovslat_prog_ids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
