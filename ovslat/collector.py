"""Turns the program's cumulative maps into one Snapshot per interval.
Collecting never prints; renderers never read maps."""

from __future__ import annotations

import dataclasses
import time

from .model import STAGES, Interface, InterfaceStats, ProbeCost, Snapshot

QUEUE_DEPTH_SOURCE = {
    "fentry": "backlog length of the target CPU at enqueue_to_backlog()",
    "kprobe": "backlog length of the target CPU at enqueue_to_backlog()",
    "tracepoint": "backlog length of the CPU running netif_rx(), sampled only on interfaces "
    "without RPS (with RPS the target CPU is not visible at this hook)",
}


class Collector:
    def __init__(self, program, interfaces: list[Interface]):
        self.program = program
        self.interfaces: dict[int, Interface] = {}
        self._prev: dict[int, InterfaceStats] = {}
        self._prev_probe_entries: tuple[int, ...] = ()
        self._prev_cost = (0, 0)
        self._last = time.monotonic()
        for iface in interfaces:
            self.add(iface)
        self.program.flip_epoch(list(self.interfaces))  # start the first interval clean

    def add(self, iface: Interface) -> None:
        self.program.add_interface(iface)
        self.interfaces[iface.slot] = iface
        self._prev.pop(iface.slot, None)

    def _cumulative(self, iface: Interface) -> InterfaceStats:
        counters, debug = self.program.read_counters(iface.slot)
        stages = {s: self.program.read_hist(iface.slot, i) for i, s in enumerate(STAGES)}
        return InterfaceStats(iface, counters, stages, debug)

    def read(self) -> Snapshot:
        now = time.monotonic()
        maxima = self.program.flip_epoch(list(self.interfaces))
        stats = []
        for slot, iface in sorted(self.interfaces.items()):
            cur = self._cumulative(iface)
            prev = self._prev.get(slot)
            self._prev[slot] = cur
            delta = cur - prev if prev else cur
            m = maxima.get(slot, (0, 0, 0))
            delta = dataclasses.replace(
                delta,
                counters=dataclasses.replace(delta.counters, queue_depth_max=m[2]),
                stages={
                    s: dataclasses.replace(delta.stages[s], max_ns=m[i])
                    for i, s in enumerate(STAGES)
                },
            )
            stats.append(delta)
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
            notes=tuple(self.program.notes),
            cost=cost,
        )
        self._last = now
        return snap
