"""Tests that run inside the lab guest, on whichever Debian kernel it booted.
What a kernel lacks is expected as absent (and said so by ovslat), never
skipped: the thresholds below are where Linux gained each feature."""

from __future__ import annotations

import json
import os
from pathlib import Path

KERNEL = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
HAS_NETFILTER_LINK = KERNEL >= (6, 4)  # BPF_PROG_TYPE_NETFILTER: S3 under tracepoints
HAS_DROP_REASONS = KERNEL >= (5, 17)  # kfree_skb's reason argument


def record(row: dict) -> None:
    """One row of the kernel x backend table (README), written where the
    host collects it after the run."""
    run = os.environ.get("OVSLAT_LAB_RUN")
    if run:
        row = {"kernel": os.uname().release, **row}
        with open(Path(run) / "matrix.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
