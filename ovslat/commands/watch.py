"""`ovslat watch`: attach once, then each interval collect -> snapshot -> render,
until --duration, SIGINT or SIGTERM; then detach and print the whole run."""

from __future__ import annotations

import json
import sys
import threading
import time

from ovslat.engine.session import Session, Stop, WatchOptions, loop, start_threshold
from ovslat.model import events
from ovslat.model.snapshot import Snapshot
from ovslat.output import jsonl
from ovslat.output import text as text_out


class _Output:
    """Where snapshots go: text and JSON lines on stdout, or the live view."""

    def __init__(
        self,
        fmt: str,
        out,
        context: dict,
        s3: str | None,
        stop: threading.Event,
        report_intervals: bool = True,
    ):
        self.fmt, self.out, self.context, self.s3 = fmt, out, context, s3
        self.report_intervals = report_intervals
        self._live = None
        self._start = time.monotonic()
        if fmt == "live":
            from ovslat.output.live import LiveView

            self._live = LiveView(stop)

    def __enter__(self):
        if self._live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live:
            self._live.__exit__(*exc)

    def start(self, session: Session) -> None:
        if self.fmt == "json":
            _emit(self.out, jsonl.record(session.start_snapshot(), "start", self.context))

    def interval(self, snap: Snapshot, final: bool = False) -> None:
        if self.fmt == "json":
            _emit(self.out, jsonl.record(snap, "interval", self.context))
        elif self.fmt == "text":
            if self.report_intervals:
                _emit(self.out, text_out.render(snap, self.s3))
        elif self._live is not None:
            self._live.update(snap, self.context, time.monotonic() - self._start)

    def event(self, ev) -> None:
        if self.fmt == "json":
            _emit(self.out, json.dumps(events.as_dict(ev), separators=(",", ":")))
        elif self.fmt == "text":
            _emit(self.out, text_out.event(ev))
        elif self._live is not None:
            self._live.event(ev)

    def summary(self, total: Snapshot) -> None:
        if self.fmt == "json":
            _emit(self.out, jsonl.record(total, "summary", self.context))
        elif self.fmt == "text":
            _emit(self.out, text_out.render(total, self.s3, summary=True))
        else:
            from ovslat.output.live import print_summary

            print_summary(total, self.context)


def run(o: WatchOptions, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    fmt = o.fmt if o.fmt != "auto" else ("live" if out.isatty() else "text")
    total = None
    with Stop() as stop, Session(o) as session:
        print(f"ovslat: measuring {session.describe()}; Ctrl-C to stop", file=err, flush=True)
        output = _Output(
            fmt, out, session.context, session.program.s3, stop.event, o.report_intervals
        )
        if o.threshold_us is not None:
            start_threshold(session, output.event)
        with output:
            output.start(session)
            total = loop(session, output, stop.event)
    if total is not None:
        output.summary(total)
    return 0


def _emit(out, text: str) -> None:
    out.write(text if text.endswith("\n") else text + "\n")
    out.flush()
