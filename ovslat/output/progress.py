"""`ovslat run`'s progress bar on stderr and its verdict: the whole-run table,
each assertion, PASSED or FAILED. With output/live.py the only rich users."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from ovslat.model.snapshot import Snapshot
from ovslat.output.live import print_summary


class RunProgress:
    """`ovslat run`'s progress on stderr: phase, time, packets and slow packets so far."""

    def __init__(self, name: str, warmup_s: float, duration_s: float | None):
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[packets]:,} enqueued  {task.fields[slow]} slow"),
            console=Console(stderr=True),
        )
        total = warmup_s + duration_s if duration_s else None
        self._task = self._progress.add_task(
            f"{name}: {'warm-up' if warmup_s else 'measuring'}", total=total, packets=0, slow=0
        )
        self._name, self._elapsed, self._packets, self._slow = name, 0.0, 0, 0

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def interval(self, snap: Snapshot, phase: str) -> None:
        self._elapsed += snap.duration_s
        if phase != "warmup":
            self._packets += sum(s.counters.enqueued for s in snap.interfaces)
        self._progress.update(
            self._task,
            completed=self._elapsed,
            packets=self._packets,
            slow=self._slow,
            description=f"{self._name}: measuring",
        )

    def event(self) -> None:
        self._slow += 1

    def __exit__(self, *exc) -> None:
        self._progress.stop()


def print_run_result(saved, outcomes, ok: bool, file: str, console: Console | None = None) -> None:
    """A finished (or re-read) run: the whole-run table, each assertion, the verdict."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    if saved.summary:
        print_summary(saved.summary, saved.start, console)
    for o in outcomes:
        mark = Text("PASS ", style="green") if o.ok else Text("FAIL ", style="bold red")
        console.print(
            mark + Text(f"{file}:{o.check.line}: {o.check.describe()}  (measured {o.actual})"),
            soft_wrap=True,
        )
    bad_steps = [s for s in saved.workload if s["status"] not in (0, "stopped")]
    for s in bad_steps:
        console.print(
            Text("FAIL ", style="bold red")
            + Text(f"workload step {s['name']!r} (line {s['line']}): {s['status']}"),
            soft_wrap=True,
        )
    failed = sum(not o.ok for o in outcomes)
    verdict = (
        Text("PASSED", style="bold green")
        if ok
        else Text(
            f"FAILED ({failed} of {len(outcomes)} assertions, {len(bad_steps)} workload steps)",
            style="bold red",
        )
    )
    console.print(verdict + Text(f"  run directory: {saved.path}"), soft_wrap=True)
