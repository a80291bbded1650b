"""Turns the program's cumulative maps into one Snapshot per interval.
Collecting never prints; renderers never read maps."""

from __future__ import annotations

import dataclasses
import time

from ovslat.abi import HopKind
from ovslat.errors import UserError
from ovslat.model.histogram import Histogram
from ovslat.model.snapshot import (
    EMPTY_STAGES,
    STAGES,
    ZERO_COUNTERS,
    HopStats,
    Interface,
    InterfaceStats,
    ProbeCost,
    Snapshot,
)

QUEUE_DEPTH_SOURCE = {
    "fentry": "backlog length of the target CPU at enqueue_to_backlog()",
    "kprobe": "backlog length of the target CPU at enqueue_to_backlog()",
    "tracepoint": "backlog length of the CPU running netif_rx(), sampled only on interfaces "
    "without RPS (with RPS the target CPU is not visible at this hook)",
}


class Collector:
    """Owns the interface slots: each interface gets a fresh one, never reused
    within a run, so a removed interface's figures stay its own."""

    def __init__(self, program, interfaces: list[Interface]):
        self.program = program
        self.interfaces: dict[int, Interface] = {}
        self._gone: dict[int, bool] = {}  # slot -> already reported once as gone
        self._next_slot = 0
        self._changes: list[str] = []  # for the next snapshot's notes
        self._prev: dict[int, InterfaceStats] = {}
        self._raw: dict[int, bytes] = {}  # slot -> its counters as last read
        self._idle_stats: dict[int, InterfaceStats] = {}  # slot -> its reused idle interval
        self._gone_stats: dict[int, InterfaceStats] = {}  # slot -> its reused "gone" line
        self._prev_probe_entries: tuple[int, ...] = ()
        self._prev_cost = (0, 0)
        self._prev_events_lost = 0
        self._last = time.monotonic()
        for iface in interfaces:
            self.add(iface)
        self.program.flip_epoch(list(self.interfaces))  # start the first interval clean
        self._prev_hops: dict = {}

    def add(self, iface: Interface) -> Interface:
        iface = dataclasses.replace(iface, slot=self._next_slot)
        self.program.add_interface(iface)
        self._next_slot += 1
        self.interfaces[iface.slot] = iface
        self.program.set_hops(len(self.interfaces) - len(self._gone) >= 2)
        return iface

    def remove(self, slot: int, note: str | None = None) -> None:
        """Stop measuring; the next read still collects what it counted so far."""
        self.program.remove_interface(self.interfaces[slot])
        self._gone[slot] = False
        if note:
            self._changes.append(note)

    def live(self) -> list[Interface]:
        return [i for s, i in self.interfaces.items() if s not in self._gone]

    def sync(self, wanted: list[Interface], owned=lambda i: bool(i.bridge)) -> list[str]:
        """Make the measured set of `owned` interfaces equal `wanted` (matched
        by namespace, ifindex and name). Returns what changed, for notes."""
        key = lambda i: (i.netns_inode, i.ifindex, i.name)  # noqa: E731
        have = {key(i): i for i in self.live() if owned(i)}
        want = {key(i): i for i in wanted}
        changes = []
        for k in have.keys() - want.keys():
            self.remove(have[k].slot)
            changes.append(f"{have[k].label} removed")
        for k in want.keys() - have.keys():
            try:
                self.add(want[k])
                changes.append(f"{want[k].label} added")
            except UserError as e:
                changes.append(f"{want[k].label} not measured: {e}")
        self._changes += changes
        return changes

    def _cumulative(self, iface: Interface, raw: bytes, drops: dict) -> InterfaceStats:
        counters, debug = self.program.parse_counters(raw)
        prev = self._prev.get(iface.slot)
        # The kernel adds to a stage's histogram only with the counter that
        # counts it (S1 -> S2 with received, S2 -> S3 with ip_rcv): an idle
        # stage's histogram (160 buckets x CPUs) needs no reading.
        if prev and (prev.counters.received, prev.counters.ip_rcv) == (
            counters.received,
            counters.ip_rcv,
        ):
            stages = prev.stages
        else:
            stages = {s: self.program.read_hist(iface.slot, i) for i, s in enumerate(STAGES)}
        return InterfaceStats(iface, counters, stages, debug, drops=_reasons(drops, iface.slot))

    def _idle(self, slot: int, prev: InterfaceStats) -> InterfaceStats:
        """The interval of an interface that counted nothing: one object per
        slot, reused, so that outputs can tell it apart by identity (and a
        JSON line need not encode it again)."""
        st = self._idle_stats.get(slot)
        if st is None or st.iface is not prev.iface:
            debug = tuple(tuple(0 for _ in row) for row in prev.debug)
            st = InterfaceStats(prev.iface, ZERO_COUNTERS, EMPTY_STAGES, debug)
            self._idle_stats[slot] = st
        return st

    def _gone_line(self, iface: Interface) -> InterfaceStats:
        st = self._gone_stats.get(iface.slot)
        if st is None:
            st = self._gone_stats[iface.slot] = InterfaceStats(
                iface, ZERO_COUNTERS, EMPTY_STAGES, (), gone=True
            )
        return st

    def _hop_delta(self, cur: dict, maxima: dict, key: tuple) -> Histogram:
        h = cur.get(key, Histogram.empty())
        prev = self._prev_hops.get(key)
        delta = h - prev if prev else h
        return dataclasses.replace(delta, max_ns=maxima.get(key, 0))

    def _hops(self, maxima: dict) -> tuple[HopStats, ...]:
        cur = self.program.read_hops()
        out = []
        # one hop per (from, to, tunnel): a VNI's packets apart from another's
        for src, dst, tunnel in sorted({(f, t, tun) for f, t, _, tun in cur}):
            if src not in self.interfaces or dst not in self.interfaces:
                continue
            transit, e2e = (self._hop_delta(cur, maxima, (src, dst, kind, tunnel))
                            for kind in (HopKind.TRANSIT, HopKind.E2E))  # fmt: skip
            out.append(HopStats(self.interfaces[src], self.interfaces[dst], transit, e2e, tunnel))
        self._prev_hops = cur
        return tuple(out)

    def read(self) -> Snapshot:
        now = time.monotonic()
        self.program.stop_learning_backlogs()
        expired = self.program.expire_flows()
        if expired:
            self._changes.append(
                f"{expired} packet(s) enqueued over {self.program.flow_expiry_s:g}s ago were never "
                "received nor dropped: their S1 records expired"
            )
        maxima, hop_maxima = self.program.flip_epoch(list(self.interfaces))
        drops = self.program.read_drops()
        # Every slot's counters in one read; an interface whose counters are
        # byte for byte the last interval's (and that saw no maximum: a packet
        # between the two reads) costs a comparison, not a parse.
        raw = self.program.read_counter_bytes(self._next_slot)
        stats = []
        # slots are handed out in increasing order: self.interfaces is sorted
        for slot, iface in self.interfaces.items():
            if self._gone.get(slot):  # reported its last figures already
                stats.append(self._gone_line(iface))
                continue
            prev = self._prev.get(slot)
            m = maxima.get(slot)
            if (
                prev is not None
                and m is None
                and slot not in self._gone
                and raw[slot] == self._raw.get(slot)
                and _reasons(drops, slot) == prev.drops
            ):
                stats.append(self._idle(slot, prev))
                continue
            if slot in self._gone:
                self._gone[slot] = True
            self._raw[slot] = raw[slot]
            cur = self._cumulative(iface, raw[slot], drops)
            self._prev[slot] = cur
            delta = cur - prev if prev else cur
            m = m or (0, 0, 0)
            delta = dataclasses.replace(
                delta,
                counters=dataclasses.replace(delta.counters, queue_depth_max=m[2]),
                stages={
                    s: dataclasses.replace(delta.stages[s], max_ns=m[i])
                    for i, s in enumerate(STAGES)
                },
                gone=slot in self._gone,
            )
            stats.append(delta)
        hops = self._hops(hop_maxima)
        entries = self.program.read_probe_entries()
        probe_delta = (
            tuple(a - b for a, b in zip(entries, self._prev_probe_entries, strict=True))
            if self._prev_probe_entries
            else entries
        )
        self._prev_probe_entries = entries
        ns, cnt = self.program.probe_cost()
        cost = ProbeCost(
            ns - self._prev_cost[0],
            cnt - self._prev_cost[1],
            sum(s.counters.enqueued for s in stats),
        )
        self._prev_cost = (ns, cnt)
        snap = Snapshot(
            start_wall_s=time.time() - (now - self._last),
            duration_s=now - self._last,
            backend=self.program.backend,
            interfaces=tuple(stats),
            probe_entries=probe_delta,
            notes=tuple(self.program.notes) + tuple(self._changes),
            cost=cost,
            hops=hops,
            events_lost=self.program.events_lost - self._prev_events_lost,
        )
        self._prev_events_lost = self.program.events_lost
        self._last = now
        self._changes = []
        return snap


def _reasons(drops: dict, slot: int) -> tuple[tuple[str, int], ...]:
    by_reason = drops.get(slot)
    return tuple(sorted(by_reason.items())) if by_reason else ()
