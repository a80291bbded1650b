"""Latency histogram arithmetic shared by every output.

The kernel side (bpf/ovslat.bpf.c: bucket_of) keeps log-linear buckets in
nanoseconds: 4 per power of two, so a bucket is at most 25% wide and a
percentile read from it is within 12.5% of the true value when reported at
the bucket's midpoint. The last bucket is open-ended: nothing wraps or is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovslat.abi import NBUCKETS

RESOLUTION = "4 log-linear buckets per power of two (bucket width <= 25%)"


def bucket_of(ns: int) -> int:
    if ns < 4:
        return ns
    m = ns.bit_length() - 1
    b = (m - 1) * 4 + ((ns >> (m - 2)) & 3)
    return min(b, NBUCKETS - 1)


def bucket_bounds(b: int) -> tuple[int, int]:
    """[low, high) in ns; the last bucket's high is its nominal bound."""
    if b < 4:
        return b, b + 1
    m, s = b // 4 + 1, b % 4
    return (4 + s) << (m - 2), (5 + s) << (m - 2)


# The buckets of every empty histogram: one tuple, so that arithmetic with an
# idle interface's histograms (most of them, at thousands of interfaces) is an
# identity test instead of 160 additions.
_ZEROS = (0,) * NBUCKETS


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket (a tuple of NBUCKETS), their sum in ns, exact max in ns."""

    buckets: tuple[int, ...]
    sum_ns: int = 0
    max_ns: int = 0

    @classmethod
    def empty(cls) -> Histogram:
        return EMPTY

    @property
    def is_empty(self) -> bool:
        """No packet in it (its max may still be set, as the collector sets it)."""
        return self.buckets is _ZEROS or not any(self.buckets)

    @property
    def count(self) -> int:
        return 0 if self.buckets is _ZEROS else sum(self.buckets)

    def __sub__(self, older: Histogram) -> Histogram:
        """The part recorded since `older` (max stays this one's: maxima are per interval)."""
        if older.buckets is self.buckets:  # nothing recorded since
            return EMPTY if not self.max_ns else Histogram(_ZEROS, 0, self.max_ns)
        if older.buckets is _ZEROS and not older.sum_ns:
            return self
        return Histogram(
            tuple(a - b for a, b in zip(self.buckets, older.buckets, strict=True)),
            self.sum_ns - older.sum_ns,
            self.max_ns,
        )

    def __add__(self, other: Histogram) -> Histogram:
        if other.buckets is _ZEROS and not other.sum_ns and other.max_ns <= self.max_ns:
            return self
        if self.buckets is _ZEROS and not self.sum_ns and self.max_ns <= other.max_ns:
            return other
        return Histogram(
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            self.sum_ns + other.sum_ns,
            max(self.max_ns, other.max_ns),
        )

    def percentile_ns(self, q: float) -> float | None:
        """The q-quantile (0 < q <= 1), interpolated inside its bucket and
        clamped to the exact maximum; None when empty."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for b, n in enumerate(self.buckets):
            if not n:
                continue
            if seen + n >= rank:
                low, high = bucket_bounds(b)
                value = low + (high - low) * max(rank - seen, 0) / n
                return min(value, self.max_ns) if self.max_ns else value
            seen += n
        return float(self.max_ns)

    def mean_ns(self) -> float | None:
        total = self.count
        return self.sum_ns / total if total else None

    def seed_rows(self) -> list[tuple[str, int]]:
        """The seed tools' histogram rows, (label, count), non-empty ones only.
        The seed's row b holds the packets with bpf_log2l(latency_us + 1) == b,
        latency_us the whole microseconds: "1-1us" is under 1 us, "2-3us" is
        1 to 3 us, "4-7us" 3 to 7 us. Regrouped from the nanosecond buckets; a
        bucket straddling a row boundary goes to its midpoint's row."""
        rows: dict[int, int] = {}
        for b, n in enumerate(self.buckets):
            if n:
                low, high = bucket_bounds(b)
                row = ((low + high) // 2000 + 1).bit_length()
                rows[row] = rows.get(row, 0) + n
        return [(f"{1 << (r - 1)}-{(1 << r) - 1}us", rows[r]) for r in sorted(rows)]


EMPTY = Histogram(_ZEROS)


def _us(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1000.0, 3)


def latency_figures(h: Histogram) -> dict[str, float | int | None]:
    """The figures every output names a stage by (JSON keys, scenario checks,
    summary.md): count, mean and percentiles in microseconds, max."""
    return {
        "count": h.count,
        "mean_us": _us(h.mean_ns()),
        "p50_us": _us(h.percentile_ns(0.50)),
        "p90_us": _us(h.percentile_ns(0.90)),
        "p99_us": _us(h.percentile_ns(0.99)),
        "p999_us": _us(h.percentile_ns(0.999)),
        "max_us": _us(h.max_ns) if h.count else None,
    }
