"""SVG plots of a run, drawn from Snapshots with the standard library only:
the latency distribution of every interface and hop, and a latency-over-time
heatmap per interface. Axes are logarithmic in time, as the kernel's buckets are."""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from ovslat.model.histogram import Histogram, bucket_bounds
from ovslat.model.snapshot import STAGES, Snapshot

WIDTH = 760
PANEL_H = 170
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 28, 34
FONT = 'font-family="sans-serif" font-size="11"'
BAR = "#3b75af"
MARK = "#c0392b"


def _svg(width: int, height: int, body: list[str]) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def _text(x: float, y: float, s: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {FONT} {extra}>{escape(s)}</text>'


def _us_label(ns: float) -> str:
    if ns >= 1e9:
        return f"{ns / 1e9:g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:g} µs"
    return f"{ns:g} ns"


def _fmt_us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1000:.1f} µs"


class _LogAxis:
    """Nanoseconds to pixels, log scale, over whole buckets."""

    def __init__(self, lo_ns: float, hi_ns: float, x0: float, x1: float):
        self.lo, self.hi = math.log10(max(lo_ns, 1)), math.log10(max(hi_ns, lo_ns + 1, 2))
        self.x0, self.x1 = x0, x1

    def __call__(self, ns: float) -> float:
        v = math.log10(max(ns, 1))
        return self.x0 + (self.x1 - self.x0) * (v - self.lo) / (self.hi - self.lo)

    def decades(self) -> list[float]:
        return [10.0**d for d in range(math.ceil(self.lo), math.floor(self.hi) + 1)]


def _used_range(hists: list[Histogram]) -> tuple[int, int]:
    used = [b for h in hists for b, n in enumerate(h.buckets) if n]
    return bucket_bounds(min(used))[0], bucket_bounds(max(used))[1]


def _series(total: Snapshot) -> list[tuple[str, Histogram]]:
    out = []
    for st in total.interfaces:
        for stage in STAGES:
            if st.stages[stage].count:
                out.append((f"{st.iface.label} · {stage}", st.stages[stage]))
    for h in total.hops:
        for kind, hist in (("transit", h.transit), ("e2e", h.e2e)):
            if hist.count:
                out.append((f"{h.src.label} → {h.dst.label} · {kind}", hist))
    return out


def distribution(total: Snapshot) -> str:
    """One panel per interface stage and hop with samples, on one shared
    latency axis so panels compare at a glance; bars are shares of packets."""
    series = _series(total)
    if not series:
        return _svg(WIDTH, 60, [_text(WIDTH / 2, 34, "no latency samples in this run", "middle")])
    lo, hi = _used_range([h for _, h in series])
    axis = _LogAxis(lo / 1.3, hi * 1.6, LEFT, WIDTH - RIGHT)  # room for the p99 label
    body = []
    for i, (title, h) in enumerate(series):
        y0 = i * PANEL_H
        top, bottom = y0 + TOP, y0 + PANEL_H - BOTTOM
        total_n = h.count
        peak = max(n / total_n for n in h.buckets)
        p50, p99 = h.percentile_ns(0.5), h.percentile_ns(0.99)
        body.append(
            _text(
                LEFT,
                y0 + 16,
                f"{title} — {total_n:,} packets, p50 {_fmt_us(p50)}, p99 {_fmt_us(p99)}, "
                f"max {_fmt_us(h.max_ns)}",
                extra='font-weight="bold"',
            )
        )
        body.append(
            f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#444"/>'
        )
        for frac in (0.5, 1.0):
            y = bottom - (bottom - top) * frac
            body.append(_text(LEFT - 6, y + 4, f"{peak * frac * 100:.0f}%", "end"))
        for b, n in enumerate(h.buckets):
            if not n:
                continue
            low, high = bucket_bounds(b)
            x0, x1 = axis(low), axis(high)
            height = (bottom - top) * (n / total_n) / peak
            body.append(
                f'<rect class="bar" x="{x0:.1f}" y="{bottom - height:.1f}" '
                f'width="{max(x1 - x0 - 0.5, 0.8):.1f}" height="{height:.1f}" fill="{BAR}">'
                f"<title>{escape(_us_label(low))}–{escape(_us_label(high))}: {n}</title></rect>"
            )
        for name, v in (("p50", p50), ("p99", p99)):
            if v:
                x = axis(v)
                body.append(
                    f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{MARK}" '
                    'stroke-dasharray="4 3"/>'
                )
                body.append(_text(x + 3, top + 10, name, extra=f'fill="{MARK}"'))
        for d in axis.decades():
            x = axis(d)
            body.append(
                f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#444"/>'
            )
            body.append(_text(x, bottom + 16, _us_label(d), "middle"))
    return _svg(WIDTH, PANEL_H * len(series), body)


def _heat_colour(share: float) -> str:
    """White (0) to dark blue (1): readable in print."""
    share = 0.15 + 0.85 * min(max(share, 0.0), 1.0) ** 0.6
    r = round(255 - share * (255 - 20))
    g = round(255 - share * (255 - 60))
    b = round(255 - share * (255 - 130))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(intervals: list[Snapshot], label: str) -> str:
    """Latency (y, log) over time (x, one column per interval) for one interface:
    a panel per stage; a cell's shade is its share of that interval's packets,
    and the line is the interval's p99."""
    body: list[str] = []
    height = 0
    for stage in STAGES:
        columns = []
        for snap in intervals:
            st = next((s for s in snap.interfaces if s.iface.label == label), None)
            columns.append(st.stages[stage] if st else Histogram.empty())
        if not any(h.count for h in columns):
            continue
        lo, hi = _used_range([h for h in columns if h.count])
        y0 = height
        top, bottom = y0 + TOP, y0 + PANEL_H + 40 - BOTTOM
        # latency runs up the y axis: reuse the log axis on y, inverted
        axis = _LogAxis(lo, hi, bottom, top)
        x0, x1 = LEFT, WIDTH - RIGHT
        width = (x1 - x0) / len(columns)
        body.append(_text(LEFT, y0 + 16, f"{label} · {stage}", extra='font-weight="bold"'))
        p99_points = []
        elapsed = 0.0
        for i, h in enumerate(columns):
            n_total = h.count
            peak = max(h.buckets)
            if n_total:
                for b, n in enumerate(h.buckets):
                    if n:
                        low, high = bucket_bounds(b)
                        ya, yb = axis(high), axis(low)
                        body.append(
                            f'<rect class="cell" x="{x0 + i * width:.1f}" y="{ya:.1f}" '
                            f'width="{width + 0.3:.1f}" height="{max(yb - ya, 0.8):.1f}" '
                            f'fill="{_heat_colour(n / peak)}"><title>'
                            f"interval {i + 1}: {escape(_us_label(low))}–"
                            f"{escape(_us_label(high))}: {n}</title></rect>"
                        )
                p99 = h.percentile_ns(0.99)
                if p99:
                    p99_points.append(f"{x0 + (i + 0.5) * width:.1f},{axis(p99):.1f}")
            elapsed += intervals[i].duration_s
        if len(p99_points) > 1:
            body.append(
                f'<polyline points="{" ".join(p99_points)}" fill="none" stroke="{MARK}" '
                'stroke-width="1.5"/>'
            )
        body.append(
            _text(
                x1,
                y0 + 16,
                "shade: packets per bucket, darkest = the interval's mode; " "line: p99",
                "end",
            )
        )
        body.append(
            f'<rect x="{x0}" y="{top}" width="{x1 - x0}" height="{bottom - top}" '
            'fill="none" stroke="#444"/>'
        )
        for d in axis.decades():
            y = axis(d)
            body.append(_text(x0 - 6, y + 4, _us_label(d), "end"))
        body.append(_text(x0, bottom + 16, "0 s", "middle"))
        body.append(_text(x1, bottom + 16, f"{elapsed:.0f} s", "middle"))
        body.append(_text((x0 + x1) / 2, bottom + 16, f"{len(columns)} intervals", "middle"))
        height = bottom + BOTTOM - 10
    if not body:
        return _svg(WIDTH, 60, [_text(WIDTH / 2, 34, f"{label}: no latency samples", "middle")])
    return _svg(WIDTH, height, body)
