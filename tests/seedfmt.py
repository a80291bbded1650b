"""Reading the seed tools' text, for the tests that pin its format and for the
lab's side-by-side run (tests/lab/seed_side_by_side.py): line kinds with the
figures masked, and the counters of each report block."""

from __future__ import annotations

import re

_STAMP = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]")
_STAMP_US = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(\.\d+)?")
_ROW = re.compile(r"^      \d+-\d+us +: +\d+ \( *[\d.]+%\) \|\**\ *\|$")
_FRAME = re.compile(r"^  \S+\+0x[0-9a-f]+( \[\S+\])?$")


def kind(line: str) -> str:
    """A line with its figures masked: what must match between the tools."""
    if _ROW.match(line):
        return "      <row>"
    if _FRAME.match(line):
        return "  <frame>"
    line = _STAMP.sub("[T]", line)
    line = _STAMP_US.sub("T", line)
    line = re.sub(r"\d+\.\d+\.\d+\.\d+", "A", line)  # addresses
    line = re.sub(r"\|\**\s*\|$", "|bar|", line)
    return _NUMBER.sub("#", line)


def kinds(text: str) -> list[str]:
    """The masked lines, runs of histogram rows or stack frames as one."""
    out: list[str] = []
    for line in text.splitlines():
        k = kind(line)
        if k in ("      <row>", "  <frame>") and out and out[-1] == k:
            continue
        out.append(k)
    return out


def blocks(text: str, title: str) -> list[dict[str, int]]:
    """The counters ("Enqueued packets" -> 40, ...) of every block whose
    heading line is `title` (e.g. "Packet Counters (Interval):")."""
    found: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    for line in text.splitlines():
        if line == title:
            current = {}
            found.append(current)
            continue
        if current is not None:
            m = re.match(r"^  ([A-Za-z -]+):\s+(\d+)$", line)
            if not m:
                current = None
                continue
            current[m.group(1)] = int(m.group(2))
    return found


def samples(text: str, after: str) -> list[int]:
    """Every "Total samples" figure after the line `after` (e.g. the cumulative header)."""
    tail = text.split(after, 1)[1] if after in text else ""
    return [int(n) for n in re.findall(r"^    Total samples: (\d+)$", tail, re.M)]
