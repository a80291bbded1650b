import random

from ovslat.model.histogram import NBUCKETS, Histogram, bucket_bounds, bucket_of


def test_every_value_falls_inside_its_bucket():
    rng = random.Random(7)
    values = list(range(0, 5000)) + [rng.randrange(1, 1 << 42) for _ in range(20000)]
    for v in values:
        b = bucket_of(v)
        low, high = bucket_bounds(b)
        if b < NBUCKETS - 1:
            assert low <= v < high, (v, b, low, high)
        else:
            assert v >= low


def test_buckets_are_contiguous_and_at_most_25_percent_wide():
    for b in range(NBUCKETS - 1):
        low, high = bucket_bounds(b)
        assert bucket_bounds(b + 1)[0] == high
        if low >= 4:
            assert (high - low) / low <= 0.25


def test_range_covers_more_than_a_minute():
    assert bucket_bounds(NBUCKETS - 1)[0] > 60 * 10**9


def hist_of(values):
    buckets = [0] * NBUCKETS
    for v in values:
        buckets[bucket_of(v)] += 1
    return Histogram(tuple(buckets), sum(values), max(values))


def test_percentiles_within_bucket_resolution():
    values = [1000 * (i + 1) for i in range(1000)]  # 1us .. 1000us
    h = hist_of(values)
    assert h.count == 1000
    for q, exact in ((0.5, 500_000), (0.9, 900_000), (0.99, 990_000)):
        assert abs(h.percentile_ns(q) - exact) / exact < 0.125
    assert h.percentile_ns(1.0) == 1_000_000  # clamped to the exact max
    assert h.mean_ns() == sum(values) / 1000
    assert Histogram.empty().percentile_ns(0.5) is None


def test_subtraction_and_addition():
    a = hist_of([100, 2000, 50_000])
    b = hist_of([100, 2000, 50_000, 70_000, 3])
    d = b - a
    assert d.count == 2 and d.sum_ns == 70_003
    assert (a + d).buckets == b.buckets


def test_seed_rows():
    """The seed's rows: bpf_log2l(latency_us + 1), so "1-1us" is under 1 us,
    "2-3us" 1-3 us, "4-7us" 3-7 us, "16-31us" 15-31 us; empty rows left out."""
    h = hist_of([500, 1500, 2500, 3500, 5000, 20_000])
    assert h.seed_rows() == [("1-1us", 1), ("2-3us", 2), ("4-7us", 2), ("16-31us", 1)]
