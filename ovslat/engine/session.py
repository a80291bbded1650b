"""A measurement session, shared by watch, run and export: validate the
options, resolve the interfaces (and follow a bridge through OVSDB), open one
program, then read one Snapshot per interval until --duration or a signal.

The engine never prints: what it reads goes to an output object
(interval(snap), event(ev)) that the command supplies."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ovslat import abi
from ovslat.discovery import DEFAULT_DB
from ovslat.errors import UserError
from ovslat.model import events
from ovslat.model.filters import Filters
from ovslat.model.snapshot import Snapshot

MAX_MAP_BYTES = 1 << 30  # pinned kernel memory ovslat allows itself at most
HOP_MATCHING = (
    "packets are matched across interfaces by IP headers OVS does not rewrite (addresses, "
    "protocol, length, ports + TCP sequence or ICMP id + sequence; IPv4's IP id; IPv6's flow "
    "label, TCP acknowledgement or a UDP datagram's first 8 payload bytes), a VXLAN or Geneve "
    "packet's by its inner headers: a hop across NAT is not seen"
)


@dataclass(frozen=True)
class WatchOptions:
    interfaces: list[str] = field(default_factory=list)
    bridge: str | None = None
    db: str = DEFAULT_DB
    only: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    workloads: frozenset[str] = frozenset()  # --pod: NAMESPACE/NAME as discovery names them
    filters: Filters = field(default_factory=Filters)
    interval_s: float = 1.0
    duration_s: float | None = None
    fmt: str = "auto"  # live on a terminal, else text
    backend: str = "auto"
    max_flows: int = 10240
    max_ifaces: int | None = None  # None: auto_slots() of the interfaces found at start
    debug: bool = False
    threshold_us: float | None = None  # slow-packet events above this latency
    # what threshold_us applies to: S1 -> S2, the transit between two interfaces, S2 -> S3
    threshold_stages: tuple[str, ...] = ("enqueue_to_receive",)
    max_events_per_sec: int = 100
    report_intervals: bool = True  # text: False prints only events and the summary


def validate(o: WatchOptions) -> None:
    if not o.interfaces and not o.bridge:
        raise UserError(
            "nothing to watch: name a bridge (ovslat watch br-int) or interfaces "
            "with -i IFACE (repeatable)"
        )
    if not o.interval_s > 0:
        raise UserError(f"--interval must be > 0 seconds, got {o.interval_s:g}")
    if o.duration_s is not None and not o.duration_s > 0:
        raise UserError(f"--duration must be > 0 seconds, got {o.duration_s:g}")
    if not 1 <= o.max_flows <= 1 << 24:
        raise UserError(f"--max-flows must be between 1 and {1 << 24}, got {o.max_flows}")
    if o.max_ifaces is not None and not 1 <= o.max_ifaces <= 65536:
        raise UserError(f"--max-ifaces must be between 1 and 65536, got {o.max_ifaces}")
    if o.max_ifaces is not None and len(o.interfaces) > o.max_ifaces:
        raise UserError(
            f"{len(o.interfaces)} interfaces named but --max-ifaces is {o.max_ifaces}; raise it"
        )
    if o.threshold_us is not None and not 0 <= o.threshold_us <= 60e6:
        raise UserError(f"--threshold-us must be between 0 and 60000000, got {o.threshold_us:g}")
    if (
        "transit" in o.threshold_stages
        and o.threshold_us is not None
        and (len(o.interfaces) < 2 and not o.bridge)
    ):
        raise UserError("--threshold-stage transit needs two or more interfaces (or a BRIDGE)")
    if not 1 <= o.max_events_per_sec <= 100_000:
        raise UserError(
            f"--max-events-per-sec must be between 1 and 100000, got {o.max_events_per_sec}"
        )
    if o.fmt not in ("auto", "live", "text", "json"):
        raise UserError(f"unknown --format {o.fmt!r}: use live, text or json")


def require_root(other_netns: bool = False) -> None:
    """Root, or the capabilities ovslat needs (ovslat/privileges.py)."""
    from ovslat.privileges import problem

    why = problem(other_netns)
    if why:
        raise UserError(why)


# Kernel memory per flow record: the u64 key, struct flow and the hash table's
# element overhead (struct htab_elem and its rounding, 56 bytes); flows is sized
# by --max-flows.
FLOW_ENTRY_BYTES = 8 + ctypes.sizeof(abi.Flow) + 56
HOP_TABLE_BYTES = abi.HOP_SLOTS * ctypes.sizeof(abi.HopEntry)


def auto_slots(found: int) -> int:
    """Interface slots when --max-ifaces is not given: room for the bridge's
    churn (pods come and go; a slot is never reused within a run) on top of
    what is there at start."""
    return max(64, 2 * found + 64)


def max_hops(slots: int) -> int:
    """Hop histograms ((from, to, kind), found in traffic): an uplink -> pod
    transit and end-to-end for every pod, and more."""
    return max(256, 2 * slots)


def map_bytes(slots: int, max_flows: int, ncpus: int) -> int:
    """An estimate of the BPF map memory the program will pin (per-CPU maps
    hold a copy per CPU)."""
    hists = slots * abi.NSTAGES * ctypes.sizeof(abi.Hist) * ncpus
    maxima = slots * 2 * ctypes.sizeof(abi.Maxima) * ncpus
    counters = (slots + 1) * ctypes.sizeof(abi.Counters) * ncpus
    hops = max_hops(slots) * (ctypes.sizeof(abi.Hist) + 3 * 8) * ncpus
    return hists + maxima + counters + hops + max_flows * FLOW_ENTRY_BYTES + HOP_TABLE_BYTES


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_memory(o: WatchOptions, slots: int, ncpus: int) -> None:
    """Kernel map memory is pinned and unswappable: never more than MAX_MAP_BYTES,
    nor half of what the host has available."""
    need = map_bytes(slots, o.max_flows, ncpus)
    available = _mem_available()
    limit = min(MAX_MAP_BYTES, available // 2) if available else MAX_MAP_BYTES
    if need > limit:
        raise UserError(
            f"--max-flows {o.max_flows} and --max-ifaces {slots} need about "
            f"{need >> 20} MiB of kernel memory for BPF maps on {ncpus} CPUs, more than "
            f"ovslat allows itself here ({limit >> 20} MiB); lower them"
        )


class Stop:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session) set
    `event`, so a loop wakes at once and ends cleanly, with its summary;
    `caught` tells a signal from other reasons to stop.

    The handler never calls event.set() itself: a handler runs in the main
    thread between two bytecodes, possibly while that thread holds the
    event's lock inside event.wait(), and set() would then wait for it
    forever (seen: a SIGINT'd watch that never printed its summary). It
    writes a byte to a pipe instead; a relay thread sets the event."""

    def __enter__(self) -> Stop:
        self.event = threading.Event()
        self.caught = False
        self._saved: dict = {}
        self._read_fd, self._write_fd = os.pipe()
        self._relay = threading.Thread(target=self._relay_signals, name="signals", daemon=True)
        self._relay.start()

        def handler(*_):
            self.caught = True
            os.write(self._write_fd, b"s")  # no lock taken: safe in a handler

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._saved[sig] = signal.signal(sig, handler)
        return self

    def _relay_signals(self) -> None:
        while os.read(self._read_fd, 1):  # b"" once __exit__ closes the write end
            self.event.set()
        os.close(self._read_fd)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        os.close(self._write_fd)
        self._relay.join()


class Session:
    """One attached measurement: the named interfaces plus a bridge's (followed
    through OVSDB), one program, one collector. Used by watch, run and export."""

    def __init__(self, o: WatchOptions):
        validate(o)
        require_root(other_netns=any("@" in spec for spec in o.interfaces))
        # Imported here: these need bcc / pyroute2, which --help and the
        # validation above must not.
        from ovslat.discovery.netlink import LinkChanges, resolve_all
        from ovslat.engine.collector import QUEUE_DEPTH_SOURCE, Collector
        from ovslat.engine.kernel import KernelInfo
        from ovslat.engine.program import EngineOptions, open_program

        self.options = o
        self.source = None
        # What is opened is closed again if a later step fails.
        with contextlib.ExitStack() as opened:
            # before the names are resolved: a deletion in between is told
            self._links = LinkChanges()
            opened.callback(self._links.close)
            interfaces = resolve_all(o.interfaces)
            if o.bridge:
                from ovslat.discovery.bridge import BridgeSource, check_measurable

                self.source = BridgeSource(
                    o.bridge, o.db, set(o.only), set(o.exclude), set(o.workloads)
                )
                opened.callback(self.source.close)
                check_measurable(self.source)
                named = {(i.netns_inode, i.ifindex) for i in interfaces}
                interfaces += [
                    i for i in self.source.interfaces() if (i.netns_inode, i.ifindex) not in named
                ]
            kernel = KernelInfo.probe()
            self.slots = o.max_ifaces or auto_slots(len(interfaces))
            _check_memory(o, self.slots, kernel.ncpus)
            self.map_bytes = map_bytes(self.slots, o.max_flows, kernel.ncpus)
            self.program = open_program(
                kernel,
                EngineOptions(o.backend, self.slots, o.max_flows, o.debug, max_hops(self.slots)),
            )
            opened.callback(self.program.close)
            self.program.set_filters(o.filters.config_fields(), o.filters.net_keys())
            if self.source:
                self.program.set_tunnel_ports(dict(self.source.current.tunnel_ports))
            self.collector = Collector(self.program, interfaces)
            self._opened = opened.pop_all()
        self.context: dict[str, Any] = {
            "backend": self.program.backend,
            "s1": self.program.s1,
            "s3": self.program.s3,
            "filters": o.filters.as_dict(),
            "queue_depth_source": QUEUE_DEPTH_SOURCE[self.program.backend],
            "hop_matching": HOP_MATCHING,
        }
        if o.threshold_us is not None:
            self.context["threshold_us"] = o.threshold_us
        self._next_check = 0.0
        self.last_read_s = 0.0  # how long the latest read of the maps took

    @property
    def backend(self) -> str:
        return self.program.backend

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self.program.notes)

    def describe(self) -> str:
        live = self.collector.live()
        shown = ", ".join(i.label for i in live[:12]) + (", ..." if len(live) > 12 else "")
        return (
            f"{len(live)} interface(s) ({shown}) with the {self.program.backend} backend; "
            f"BPF maps about {self.map_bytes / (1 << 20):.1f} MiB for {self.slots} "
            "interface slots"
        )

    def follow(self) -> None:
        """Apply OVSDB changes to the measured set (cheap when nothing changed),
        and notice named interfaces that were deleted."""
        if self.source and self.source.refresh():
            self.program.set_tunnel_ports(dict(self.source.current.tunnel_ports))
            self.collector.sync(self.source.interfaces())
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + NAMED_CHECK_S
            if not self._links.changed():
                return
            for i in self.collector.live():
                if not i.bridge and not i.netns and _ifindex(i.name) != i.ifindex:
                    self.collector.remove(i.slot, f"{i.label} deleted (or renamed)")

    def read(self) -> Snapshot:
        began = time.monotonic()
        snap = self.collector.read()
        self.last_read_s = time.monotonic() - began
        return snap

    def start_snapshot(self) -> Snapshot:
        """Nothing measured yet: what a "start" record shows (backend, notes)."""
        return Snapshot(time.time(), 0.0, self.backend, (), notes=self.notes)

    def close(self) -> None:
        self._opened.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# How often a bridge's ports are checked for changes between reports, how
# often named interfaces are checked for deletion, and how often slow-packet
# events are read from the perf buffer.
BRIDGE_POLL_S = 0.5
NAMED_CHECK_S = 1.0
EVENT_POLL_S = 0.1


def _ifindex(name: str) -> int | None:
    """The ifindex of `name` in ovslat's own network namespace (an ioctl on a
    socket: right even where /sys shows another namespace), None when none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def start_threshold(session: Session, emit) -> None:
    """Slow-packet events from the kernel, numbered and placed on the wall clock, to emit()."""
    o, collector = session.options, session.collector
    assert o.threshold_us is not None  # callers start this only with a threshold set
    threshold_ns = round(o.threshold_us * 1000)
    numbered = iter(range(1, 1 << 62))

    def on_event(raw, stack):
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC: place the event on the wall clock
        age_s = (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - raw.ts_receive_ns) / 1e9

        def label(slot):
            iface = collector.interfaces.get(slot)
            return iface.label if iface else f"slot {slot}"

        wall_s = time.time() - age_s
        emit(
            events.from_raw(
                raw,
                stack,
                next(numbered),
                wall_s,
                label(raw.slot),
                threshold_ns,
                label(raw.from_slot),
            )
        )

    session.program.set_threshold(threshold_ns, o.max_events_per_sec, on_event, o.threshold_stages)


def loop(session: Session, output, stop: threading.Event) -> Snapshot | None:
    """Report every interval until --duration or stop, the last one (partial,
    when a signal ends the run) with final=True; returns the whole run."""
    o = session.options
    start = time.monotonic()
    deadline = None if o.duration_s is None else start + o.duration_s
    report = start + o.interval_s
    total = None
    while True:
        wake = report if deadline is None else min(report, deadline)
        wake = min(wake, time.monotonic() + (BRIDGE_POLL_S if session.source else NAMED_CHECK_S))
        if o.threshold_us is not None:
            wake = min(wake, time.monotonic() + EVENT_POLL_S)
        stop.wait(max(0.0, wake - time.monotonic()))
        session.follow()
        if o.threshold_us is not None:
            session.program.poll_events()
        now = time.monotonic()
        ending = stop.is_set() or (deadline is not None and now >= deadline - 1e-3)
        if now >= report - 1e-3 or ending:
            snap = session.read()
            total = snap if total is None else total.merge(snap)
            output.interval(snap, final=ending)
            report = now + o.interval_s
        if ending:
            return total
