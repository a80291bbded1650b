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

from ovslat.errors import UserError
from ovslat.model import events
from ovslat.model.filters import Filters
from ovslat.model.histogram import latency_figures
from ovslat.model.snapshot import Snapshot
from ovslat.output import jsonl, plots
from ovslat.output import text as text_out
from ovslat.scenario.schema import COUNTER_METRICS, Check

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
                snap = jsonl.parse_record(rec)
                (saved.warmup if rec.get("phase") == "warmup" else saved.intervals).append(snap)
            elif kind == "summary":
                saved.summary = jsonl.parse_record(rec)
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


def _names(iface, hosts: dict[str, str]) -> set[str]:
    """What a check may call an interface: NAME, NAME@NETNS, NAME@HOST for a
    topology host's namespace (whose name is made up at each run)."""
    out = {iface.name, iface.label}
    out |= {f"{iface.name}@{h}" for h, ns in hosts.items() if iface.netns and ns == iface.netns}
    return out


def evaluate(
    checks: tuple[Check, ...], summary: Snapshot | None, hosts: dict[str, str] | None = None
) -> list[Outcome]:
    hosts = hosts or {}
    out = []
    for c in checks:
        if summary is None:
            out.append(Outcome(c, False, "no summary: the run ended before measuring"))
            continue
        if c.hop:
            hop = next(
                (
                    h
                    for h in summary.hops
                    if c.hop[0] in _names(h.src, hosts) and c.hop[1] in _names(h.dst, hosts)
                ),
                None,
            )
            if hop is None:
                out.append(Outcome(c, False, "hop not seen"))
                continue
            h = hop.transit if c.stage == "transit" else hop.e2e
            values = [("", latency_figures(h)[c.metric])]
        else:
            stats = [
                st
                for st in summary.interfaces
                if c.interface == "*" or c.interface in _names(st.iface, hosts)
            ]
            if not stats:
                out.append(Outcome(c, False, "interface not measured"))
                continue
            values = []
            for st in stats:
                if c.metric in COUNTER_METRICS:
                    v = getattr(st.counters, c.metric)
                else:
                    assert c.stage is not None  # schema: a latency metric needs stage:
                    v = latency_figures(st.stages[c.stage])[c.metric]
                values.append((st.iface.label, v))
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
    run, start, total = saved.run, saved.start, saved.summary
    lines = [f"# {run.get('scenario', saved.path.name)}: {'PASSED' if ok else 'FAILED'}", ""]
    if run.get("description"):
        lines += [run["description"], ""]
    lines += [
        f"- scenario file: `{run.get('file', '?')}`",
        f"- started: {run.get('started', '?')}, "
        f"measured {total.duration_s if total else 0:.1f} s"
        + (f" after a {run['warmup_s']:g} s warm-up" if run.get("warmup_s") else ""),
        f"- backend: {start.get('backend')}; S3: {start.get('s3') or 'not available'}",
        "- filters: " + Filters.from_dict(start.get("filters") or {}).describe(),
        "",
        "## Interfaces",
        "",
        "| interface | role | workload | enqueued | received | sync | ip_rcv | cross-CPU "
        "| lookup fail | dropped | S1→S2 p50 µs | p99 | max | S2→S3 p50 µs | p99 |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for st in total.interfaces if total else ():
        c = st.counters
        s1 = latency_figures(st.stages["enqueue_to_receive"])
        s2 = latency_figures(st.stages["receive_to_ip"])
        lines.append(
            f"| {st.iface.label}{' (gone)' if st.gone else ''} | {st.iface.role or '-'} "
            f"| {st.iface.workload or '-'} | {c.enqueued} | {c.received} | {c.received_sync} "
            f"| {c.ip_rcv} | {c.cross_cpu} "
            f"| {c.flow_lookup_failures} | {c.dropped} | {_us(s1['p50_us'])} "
            f"| {_us(s1['p99_us'])} | {_us(s1['max_us'])} | {_us(s2['p50_us'])} "
            f"| {_us(s2['p99_us'])} |"
        )
    if total and total.hops:
        lines += [
            "",
            "## Hops",
            "",
            "| from | to | packets | transit p50 µs | p99 | e2e p50 µs | p99 |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for h in total.hops:
            t, e = latency_figures(h.transit), latency_figures(h.e2e)
            lines.append(
                f"| {h.src.label} | {h.dst.label} | {t['count']} | {_us(t['p50_us'])} | "
                f"{_us(t['p99_us'])} | {_us(e['p50_us'])} | {_us(e['p99_us'])} |"
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
    text = [text_out.render(snap, s3) for snap in saved.intervals]
    text += [text_out.event(ev) for ev in saved.events]
    if saved.summary:
        text.append(text_out.render(saved.summary, s3, summary=True))
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

    outcomes = evaluate(checks, saved.summary, (saved.run or {}).get("hosts", {}))
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
