"""README's kernel x backend table, generated from what the lab guests
measured (tests/lab/guest records one row per kernel and backend).

    python3 tests/lab/matrix.py           print the table of the last lab run
    python3 tests/lab/matrix.py --write   put it into README.md

tests/lab/test_lab.py fails when README's rows differ from the run's. The
exact Debian releases go under the table, not in it: the archive moves them
on, and a point release is not a reason for CI to fail."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
from tests.lab import vm  # noqa: E402

README = REPO / "README.md"
BEGIN, END = "<!-- lab-matrix:begin -->", "<!-- lab-matrix:end -->"
SUITE_NAMES = {"bullseye": "Debian 11", "bookworm": "Debian 12", "trixie": "Debian 13"}
BACKEND_ORDER = ("fentry", "kprobe", "tracepoint")
HEADER = (
    "| Kernel | Backend | S1 → S2 → S3 of 250 sent | S3 is | Left out on this kernel |\n"
    "|---|---|---|---|---|"
)


def save(kernel: str, rows: list[dict]) -> None:
    d = vm.CACHE / "matrix"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{kernel}.jsonl").write_text(
        "".join(json.dumps({**r, "lab": kernel}) + "\n" for r in rows)
    )


def load() -> list[dict]:
    rows = []
    for kernel in vm.KERNELS:
        f = vm.CACHE / "matrix" / f"{kernel}.jsonl"
        if f.exists():
            rows += [json.loads(x) for x in f.read_text().splitlines()]
    return rows


def _kernel_cell(lab: str) -> str:
    return f"{lab} ({SUITE_NAMES[vm.KERNELS[lab]]})"


def render(rows: list[dict]) -> str:
    order = list(vm.KERNELS)
    rows = sorted(rows, key=lambda r: (order.index(r["lab"]), BACKEND_ORDER.index(r["backend"])))
    lines = [HEADER]
    releases = {}
    for r in rows:
        c = r["counters"]
        counts = f"{c['enqueued']} → {c['received']} → {c['ip_rcv']}"
        notes = list(r["notes"])
        s3 = r["s3"] or "— (not measured)"
        cells = (_kernel_cell(r["lab"]), r["backend"], counts, s3, "; ".join(notes) or "—")
        lines.append("| " + " | ".join(cells) + " |")
        releases[r["lab"]] = r["kernel"]
    lines.append("")
    lines.append(
        "Measured on "
        + ", ".join(f"{releases[k]}" for k in order if k in releases)
        + " (the releases Debian's archive served at the time of the run)."
    )
    return "\n".join(lines)


def rows_by_kernel(table: str) -> dict[str, list[str]]:
    """lab kernel name -> its table rows (the part that must match)."""
    out: dict[str, list[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "Kernel":
            out.setdefault(cells[0].split()[0], []).append(" | ".join(cells))
    return out


def readme_table(path: Path = README) -> str:
    text = path.read_text()
    if BEGIN not in text:
        return ""
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def write(table: str, path: Path = README) -> None:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = ap.parse_args()
    rows = load()
    if not rows:
        print("no lab run recorded yet: ./dev lab", file=sys.stderr)
        return 2
    table = render(rows)
    if args.write:
        write(table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
