"""The seed tools' command lines, so existing runbooks keep working:

    enqueue_to_iprec_latency --interface IF [--src-ip ..] [--dst-ip ..] [--src-port ..]
        [--dst-port ..] [--protocol tcp|udp|icmp|all] [--interval S] [--debug]
    enqueue_to_iprec_latency_threshold --interface IF --threshold-us US [same filters]

Both measure one interface with ovslat's engine and print the seed's text:
the interval report, or the HIGH LATENCY EVENT blocks. Errors are one line
and exit 2, as everywhere in ovslat.
"""

from __future__ import annotations

import argparse
import sys

from ovslat.args import Parser, add_filters, integer, number, seconds
from ovslat.args import filters as args_filters
from ovslat.errors import one_line_exit


def _parser(prog: str, threshold: bool) -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description=(
            "Report packets whose enqueue_to_backlog -> __netif_receive_skb latency exceeds "
            "--threshold-us, with stack, CPUs, flow and queue depth (ovslat's engine; "
            "`ovslat watch --threshold-us` does this for many interfaces at once)."
            if threshold
            else "Histograms of enqueue_to_backlog -> __netif_receive_skb -> ip_rcv latency "
            "on one interface, every --interval (ovslat's engine; `ovslat watch` does this "
            "for many interfaces at once)."
        ),
    )
    p.add_argument("--interface", required=True, help="interface to measure (IFACE or IFACE@NETNS)")
    add_filters(p)
    p.add_argument(
        "--interval", type=seconds("--interval"), default=1.0, help="seconds (default 1)"
    )
    p.add_argument("--debug", action="store_true", help="per-stage debug counters")
    p.add_argument("--attach", default="auto", help="auto (default), fentry, kprobe, tracepoint")
    if threshold:
        p.add_argument(
            "--threshold-us",
            type=number("--threshold-us"),
            required=True,
            help="report packets slower than this (microseconds)",
        )
        p.add_argument("--max-events-per-sec", type=integer("--max-events-per-sec"), default=100)
    p.add_argument("--duration", type=seconds("--duration"), default=None, help=argparse.SUPPRESS)
    return p


def _main(prog: str, threshold: bool, argv: list[str] | None) -> int:
    from ovslat.commands.watch import run
    from ovslat.engine.session import WatchOptions

    argv = sys.argv[1:] if argv is None else argv

    def command() -> int:
        a = _parser(prog, threshold).parse_args(argv)
        return run(
            WatchOptions(
                interfaces=[a.interface],
                filters=args_filters(a),
                interval_s=a.interval,
                duration_s=a.duration,
                fmt="text",
                backend=a.attach,
                debug=a.debug,
                threshold_us=a.threshold_us if threshold else None,
                max_events_per_sec=a.max_events_per_sec if threshold else 100,
                report_intervals=not threshold,
            )
        )

    return one_line_exit(prog, command)


def latency_main(argv: list[str] | None = None) -> int:
    return _main("enqueue_to_iprec_latency", False, argv)


def threshold_main(argv: list[str] | None = None) -> int:
    return _main("enqueue_to_iprec_latency_threshold", True, argv)


if __name__ == "__main__":
    sys.exit(latency_main())
