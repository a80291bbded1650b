"""A run directory: what `ovslat run` writes and `ovslat report` re-renders.

measurements.jsonl is the record (the same JSON lines as `watch --format
json`, plus "run" and "workload" records); report.txt, summary.md, the SVG
plots and result.json are all drawn from it, so a saved run re-renders
anywhere, without root or a kernel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import events, plots, render_json, render_text
from .errors import UserError
from .model import Snapshot
from .scenario import COUNTER_METRICS, Check

MEASUREMENTS = "measurements.jsonl"
SCENARIO_COPY = "scenario.yaml"


@dataclass
class SavedRun:
    path: Path
    run: dict = field(default_factory=dict)  # scenario name, file, start time
    start: dict = field(default_factory=dict)
    warmup: list[Snapshot] = field(default_factory=list)
    intervals: list[Snapshot] = field(default_factory=list)
    summary: Snapshot | None = None
    summary_record: dict | None = None
    events: list = field(default_factory=list)
    workload: list[dict] = field(default_factory=list)

    @property
    def context(self) -> dict:
        return self.start


def load(run_dir: str | Path) -> SavedRun:
    path = Path(run_dir)
    src = path / MEASUREMENTS
    try:
        lines = src.read_text().splitlines()
    except OSError as e:
        raise UserError(
            f"{path} is not a run directory ({MEASUREMENTS}: {e.strerror or e}); "
            "give a directory written by `ovslat run`"
        ) from None
    saved = SavedRun(path)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            kind = rec["type"]
            if kind == "run":
                saved.run = rec
            elif kind == "start":
                saved.start = rec
            elif kind == "interval":
                snap = render_json.parse_record(rec)
                (saved.warmup if rec.get("phase") == "warmup" else saved.intervals).append(snap)
            elif kind == "summary":
                saved.summary_record = rec
                saved.summary = render_json.parse_record(rec)
            elif kind == "event":
                saved.events.append(events.from_dict(rec))
            elif kind == "workload":
                saved.workload = rec["steps"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{src}:{n}: not a record ovslat wrote ({type(e).__name__}: {e})"
            ) from None
    if not saved.start:
        raise UserError(f"{src}: no start record; the run did not attach")
    return saved


# ---- assertions -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    check: Check
    ok: bool
    actual: str  # what was measured, for the report


def _compare(op: str, actual: float, want: float) -> bool:
    return {
        "lt": actual < want,
        "le": actual <= want,
        "gt": actual > want,
        "ge": actual >= want,
        "eq": actual == want,
    }[op]


def _label(obj: dict) -> str:
    """An interface record's label, as Interface.label writes it."""
    return f"{obj['name']}@{obj['netns']}" if obj.get("netns") else obj["name"]


def _matches(obj: dict, name: str) -> bool:
    return name in (obj["name"], _label(obj))


def evaluate(checks: tuple[Check, ...], summary: dict | None) -> list[Outcome]:
    out = []
    for c in checks:
        if summary is None:
            out.append(Outcome(c, False, "no summary: the run ended before measuring"))
            continue
        if c.hop:
            hop = next(
                (h for h in summary["hops"] if (h["from"], h["to"]) == c.hop),
                None,
            )
            if hop is None:
                out.append(Outcome(c, False, "hop not seen"))
                continue
            values = [("", (hop if c.stage == "transit" else hop["e2e"]).get(c.metric))]
        else:
            ifaces = [
                i for i in summary["interfaces"] if c.interface == "*" or _matches(i, c.interface)
            ]
            if not ifaces:
                out.append(Outcome(c, False, "interface not measured"))
                continue
            values = []
            for i in ifaces:
                label = _label(i)
                if c.metric in COUNTER_METRICS:
                    values.append((label, i["counters"][c.metric]))
                else:
                    values.append((label, i["stages"][c.stage].get(c.metric)))
        bad = [(who, v) for who, v in values if v is None or not _compare(c.op, v, c.value)]
        shown = ", ".join(
            (f"{who}: " if who and len(values) > 1 else "")
            + ("no samples" if v is None else f"{v:g}")
            for who, v in (bad or values)
        )
        out.append(Outcome(c, not bad, shown))
    return out


# ---- rendering --------------------------------------------------------------------


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def _us(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown(saved: SavedRun, outcomes: list[Outcome], plot_files: list[str], ok: bool) -> str:
    run, start = saved.run, saved.start
    total = saved.summary_record
    lines = [f"# {run.get('scenario', saved.path.name)}: {'PASSED' if ok else 'FAILED'}", ""]
    if run.get("description"):
        lines += [run["description"], ""]
    lines += [
        f"- scenario file: `{run.get('file', '?')}`",
        f"- started: {run.get('started', '?')}, "
        f"measured {total['duration_s'] if total else 0:.1f} s"
        + (f" after a {run['warmup_s']:g} s warm-up" if run.get("warmup_s") else ""),
        f"- backend: {start.get('backend')}; S3: {start.get('s3') or 'not available'}",
        "- filters: "
        + (", ".join(f"{k}={v}" for k, v in start.get("filters", {}).items() if v is not None)),
        "",
        "## Interfaces",
        "",
        "| interface | role | enqueued | received | ip_rcv | cross-CPU | lookup fail | dropped "
        "| S1→S2 p50 µs | p99 | max | S2→S3 p50 µs | p99 |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for i in total["interfaces"] if total else []:
        c, s1, s2 = i["counters"], i["stages"]["enqueue_to_receive"], i["stages"]["receive_to_ip"]
        label = _label(i)
        lines.append(
            f"| {label}{' (gone)' if i['gone'] else ''} | {i['role'] or '-'} | {c['enqueued']} "
            f"| {c['received']} | {c['ip_rcv']} | {c['cross_cpu']} | {c['flow_lookup_failures']} "
            f"| {c['dropped']} | {_us(s1['p50_us'])} | {_us(s1['p99_us'])} | {_us(s1['max_us'])} "
            f"| {_us(s2['p50_us'])} | {_us(s2['p99_us'])} |"
        )
    if total and total["hops"]:
        lines += [
            "",
            "## Hops",
            "",
            "| from | to | packets | transit p50 µs | p99 | e2e p50 µs | p99 |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for h in total["hops"]:
            lines.append(
                f"| {h['from']} | {h['to']} | {h['count']} | {_us(h['p50_us'])} | "
                f"{_us(h['p99_us'])} | {_us(h['e2e']['p50_us'])} | {_us(h['e2e']['p99_us'])} |"
            )
    if saved.events:
        lines += ["", f"## Slow packets: {len(saved.events)} reported", ""]
        for ev in saved.events[:10]:
            lines.append(
                f"- #{ev.number} {ev.interface}: {ev.latency_ns / 1000:.1f} µs, CPU "
                f"{ev.enqueue_cpu}→{ev.receive_cpu}, {ev.context}: {ev.diagnosis}"
            )
        if len(saved.events) > 10:
            lines.append(f"- … {len(saved.events) - 10} more in report.txt")
    if saved.workload:
        lines += ["", "## Workload", "", "| step | exit | seconds |", "|---|--:|--:|"]
        for s in saved.workload:
            lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} |")
    if outcomes:
        lines += [
            "",
            "## Assertions",
            "",
            "| line | check | measured | result |",
            "|--:|---|---|---|",
        ]
        for o in outcomes:
            lines.append(
                f"| {o.check.line} | {o.check.describe()} | {o.actual} "
                f"| {'pass' if o.ok else '**FAIL**'} |"
            )
    if plot_files:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({name})" for name in plot_files]
    return "\n".join(lines) + "\n"


def render(saved: SavedRun, checks: tuple[Check, ...]) -> tuple[bool, list[Outcome]]:
    """(Re)write report.txt, summary.md, the plots and result.json; True when
    every check passed and every workload step succeeded."""
    d = saved.path
    s3 = saved.start.get("s3")
    text = [render_text.render(snap, s3) for snap in saved.intervals]
    text += [render_text.event(ev) for ev in saved.events]
    if saved.summary:
        text.append(render_text.render(saved.summary, s3, summary=True))
    (d / "report.txt").write_text("\n".join(t.rstrip("\n") for t in text) + "\n")

    for old in d.glob("*.svg"):
        old.unlink()
    plot_files = []
    if saved.summary:
        (d / "distribution.svg").write_text(plots.distribution(saved.summary))
        plot_files.append("distribution.svg")
        for st in saved.summary.interfaces:
            name = f"heatmap-{_safe(st.iface.label)}.svg"
            (d / name).write_text(plots.heatmap(saved.intervals, st.iface.label))
            plot_files.append(name)

    outcomes = evaluate(checks, saved.summary_record)
    workload_ok = all(s["status"] in (0, "stopped") for s in saved.workload)
    ok = saved.summary is not None and workload_ok and all(o.ok for o in outcomes)
    (d / "summary.md").write_text(markdown(saved, outcomes, plot_files, ok))
    result = {
        "passed": ok,
        "workload_ok": workload_ok,
        "checks": [
            {
                "line": o.check.line,
                "check": o.check.describe(),
                "measured": o.actual,
                "passed": o.ok,
            }
            for o in outcomes
        ],
        "files": ["measurements.jsonl", "report.txt", "summary.md", *plot_files],
    }
    (d / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return ok, outcomes


def outcome_lines(outcomes: list[Outcome], file: str) -> list[str]:
    return [
        f"{'PASS' if o.ok else 'FAIL'}  {file}:{o.check.line}: {o.check.describe()}  "
        f"(measured {o.actual})"
        for o in outcomes
    ]
