"""The seed tools, as their runbooks call them (everoute/troubleshooting-tools,
PR #25, measurement-tools/.../system-network-internal/):

    enqueue_to_iprec_latency --interface IF [--src-ip ..] [--dst-ip ..]
        [--src-port N] [--dst-port N] [--protocol tcp|udp|all] [--interval 5]
        [--duration 0] [--threshold US] [--debug]
    enqueue_to_iprec_latency_threshold --interface IF [same filters] [--threshold-us 1000]

Same flags, defaults and meanings as the tools' code (a port filter matches
either port of a packet, --threshold 0 is off, --duration 0 runs until
Ctrl-C), the same root check, and their text line for line
(output/seedtext.py), measured by ovslat's engine on any backend. ovslat's
own: --attach, --extended (its lines added to the seed's), --max-events-per-sec,
and the threshold tool's --duration. Other errors are ovslat's: one line on
stderr, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ovslat.args import Parser, add_max_events, integer, number
from ovslat.errors import one_line_exit
from ovslat.output import seedtext

ROOT_LINE = "This program must be run as root"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--interface",
        required=True,
        help="Target interface to monitor (e.g., enp24s0f0np0 or br-int); ovslat: IFACE@NETNS too",
    )
    p.add_argument("--src-ip", help="Source IP filter")
    p.add_argument("--dst-ip", help="Destination IP filter")
    p.add_argument(
        "--src-port", type=integer("--src-port"), help="Source port filter (either port matches)"
    )
    p.add_argument(
        "--dst-port",
        type=integer("--dst-port"),
        help="Destination port filter (either port matches)",
    )
    p.add_argument(
        "--protocol",
        default="all",
        help="Protocol filter: tcp, udp or all (default: all); ovslat: icmp too",
    )


def _ovslat_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ovslat's own")
    g.add_argument("--attach", default="auto", help="auto (default), fentry, kprobe, tracepoint")
    g.add_argument(
        "--extended",
        action="store_true",
        help="add ovslat's lines to the seed's text: percentiles, drops, in flight, "
        "queue depth maximum, receive context and diagnosis of events",
    )
    add_max_events(g, "high-latency events printed")


def summary_parser(prog: str = "enqueue_to_iprec_latency") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Focused RX Latency: enqueue_to_backlog → ip_rcv (ovslat's engine; "
        "`ovslat watch` measures many interfaces at once)",
    )
    _common(p)
    p.add_argument(
        "--interval",
        type=number("--interval"),
        default=5,
        help="Statistics interval in seconds (default: 5)",
    )
    p.add_argument(
        "--duration",
        type=number("--duration"),
        default=0,
        help="Total execution time in seconds (default: 0 = run indefinitely)",
    )
    p.add_argument(
        "--threshold",
        type=number("--threshold"),
        metavar="MICROSECONDS",
        help="Enable high-latency event tracking: packets whose stage latency exceeds this "
        "many microseconds are reported in real time (default: off)",
    )
    p.add_argument("--debug", action="store_true", help="Enable debug statistics output")
    _ovslat_flags(p)
    return p


def threshold_parser(prog: str = "enqueue_to_iprec_latency_threshold") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Threshold-Based RX Latency Analysis: enqueue_to_backlog → "
        "__netif_receive_skb (ovslat's engine; `ovslat watch --threshold-us` does this for "
        "many interfaces at once)",
    )
    _common(p)
    p.add_argument(
        "--threshold-us",
        type=number("--threshold-us"),
        default=1000,
        help="Latency threshold in microseconds (default: 1000us = 1ms)",
    )
    _ovslat_flags(p)
    p.add_argument(
        "--duration",
        type=number("--duration"),
        default=0,
        help="ovslat: stop after this many seconds, with the final summary (default: 0 = "
        "until Ctrl-C)",
    )
    return p


def _is_root_enough() -> bool:
    """The seed requires euid 0; ovslat also runs with just its capabilities."""
    from ovslat.privileges import problem

    return os.geteuid() == 0 or problem() is None


def _write(out, lines: list[str]) -> None:
    out.write("".join(line + "\n" for line in lines))
    out.flush()


def _options(a, threshold_ns: int | None, stages: tuple[str, ...], interval_s: float):
    from ovslat.args import filters
    from ovslat.engine.session import WatchOptions
    from ovslat.model.filters import Filters

    f = filters(
        argparse.Namespace(
            src_ip=a.src_ip,
            dst_ip=a.dst_ip,
            src_port=a.src_port or None,  # the seed's 0: no filter
            dst_port=a.dst_port or None,
            protocol=a.protocol,
        )
    )
    f = Filters(f.src_ip, f.dst_ip, f.src_port, f.dst_port, f.protocol, ports_either=True)
    return WatchOptions(
        interfaces=[a.interface],
        filters=f,
        interval_s=interval_s,
        duration_s=a.duration if a.duration > 0 else None,
        fmt="text",
        backend=a.attach,
        debug=getattr(a, "debug", False),
        threshold_us=None if threshold_ns is None else threshold_ns / 1000,
        threshold_stages=stages,
        max_events_per_sec=a.max_events_per_sec,
    )


def _settings(a, session, threshold_us: float) -> seedtext.Settings:
    iface = session.collector.live()[0]
    return seedtext.Settings(
        interface=a.interface,
        ifindex=iface.ifindex,
        protocol=a.protocol,
        src_ip=a.src_ip,
        dst_ip=a.dst_ip,
        src_port=a.src_port or 0,
        dst_port=a.dst_port or 0,
        interval_s=getattr(a, "interval", 0),
        duration_s=a.duration,
        threshold_us=threshold_us,
        debug=getattr(a, "debug", False),
    )


def _notes(prog: str, session, err) -> None:
    for note in session.notes:
        print(f"{prog}: note: {note}", file=err, flush=True)


def _one(snap):
    return snap.interfaces[0] if snap and snap.interfaces else None


class _Summary:
    """The summary tool's stdout: a report per interval, events as they come,
    the final interval and the cumulative report at the end."""

    def __init__(self, out, a, tracking: bool):
        self.out, self.a, self.tracking = out, a, tracking
        self.total = None
        self.final = None
        self.events = 0  # in the current interval
        self.all_events = 0

    def interval(self, snap, final: bool = False) -> None:
        self.total = snap if self.total is None else self.total.merge(snap)
        if final:
            self.final = snap
            return
        _write(self.out, self.report(snap))

    def report(self, snap) -> list[str]:
        total = self.total
        debug = (_one(total), total.probe_entries) if self.a.debug and total else None
        lines = seedtext.interval_report(
            _one(snap),
            snap.start_wall_s + snap.duration_s,
            snap.duration_s,
            debug,
            self.events if self.tracking else None,
            self.a.extended,
        )
        self.events = 0
        return lines

    def event(self, ev) -> None:
        self.events += 1
        self.all_events += 1
        _write(self.out, seedtext.summary_event(ev))

    def end(self, caught: bool) -> None:
        if caught:
            lines = ["", "", "Final interval statistics:"]
        else:
            lines = ["", "", f"Duration limit reached ({seedtext._n(self.a.duration)} seconds)"]
            lines += ["", "Final interval statistics:"]
        if self.final is not None:
            lines += self.report(self.final)
        total = self.total
        lines += ["", ""]
        lines += seedtext.cumulative_report(
            _one(total),
            total.start_wall_s + total.duration_s if total else time.time(),
            total.duration_s if total else 0.0,
            self.all_events if self.tracking else None,
            self.a.extended,
        )
        if caught:
            lines += ["", "Exiting..."]
        _write(self.out, lines)


class _Threshold:
    """The threshold tool's stdout: an event block per breach, the summary at the end."""

    def __init__(self, out, a):
        self.out, self.a = out, a
        self.total = None
        self.captured = 0

    def interval(self, snap, final: bool = False) -> None:
        self.total = snap if self.total is None else self.total.merge(snap)

    def event(self, ev) -> None:
        self.captured += 1
        _write(self.out, seedtext.threshold_event(ev, self.a.threshold_us, self.a.extended))

    def end(self, caught: bool) -> None:
        lines = ["", "", "Final summary:"]
        lines += seedtext.threshold_summary(_one(self.total), self.captured, self.a.extended)
        _write(self.out, lines + ["", "Exiting..."])


def _run(prog: str, threshold_tool: bool, argv: list[str], out, err) -> int:
    from ovslat.engine.session import Session, Stop, loop, start_threshold

    a = (threshold_parser(prog) if threshold_tool else summary_parser(prog)).parse_args(argv)
    if threshold_tool:
        # the seed reports latency_us >= T, latency_us being whole microseconds
        threshold_ns = max(round(a.threshold_us * 1000) - 1, 0)
        stages: tuple[str, ...] = ("enqueue_to_receive",)
        shown_us, interval_s = a.threshold_us, 5.0
    else:
        # the seed reports latency_us > T, for both stage pairs; --threshold 0 is off
        on = bool(a.threshold)
        threshold_ns = round((a.threshold + 1) * 1000) - 1 if on else None
        stages = ("enqueue_to_receive", "receive_to_ip")
        shown_us, interval_s = (a.threshold if on else 0), a.interval
    o = _options(a, threshold_ns, stages, interval_s)
    with Stop() as stop, Session(o) as session:
        s = _settings(a, session, shown_us)
        output: _Summary | _Threshold
        if threshold_tool:
            output = _Threshold(out, a)
            _write(out, seedtext.threshold_banner(s) + seedtext.threshold_attached(session.backend))
        else:
            output = _Summary(out, a, threshold_ns is not None)
            _write(
                out,
                seedtext.summary_banner(s)
                + seedtext.summary_attached(
                    session.backend, session.program.s3 is not None, a.interval
                ),
            )
        _notes(prog, session, err)
        if threshold_ns is not None:
            start_threshold(session, output.event)
        loop(session, output, stop.event)
        session.program.poll_events()  # events of the last moments, before the end
    output.end(stop.caught)
    return 0


def _main(prog: str, threshold_tool: bool, argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not _is_root_enough():
        # the tools check this first, before their arguments, and say it on stdout
        print(ROOT_LINE, flush=True)
        return 1
    return one_line_exit(prog, lambda: _run(prog, threshold_tool, argv, sys.stdout, sys.stderr))


def latency_main(argv: list[str] | None = None) -> int:
    return _main("enqueue_to_iprec_latency", False, argv)


def threshold_main(argv: list[str] | None = None) -> int:
    return _main("enqueue_to_iprec_latency_threshold", True, argv)


if __name__ == "__main__":
    sys.exit(latency_main())
