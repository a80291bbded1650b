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

from .errors import UserError

EXIT_USER = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _number(flag: str, conv=float):
    def parse(text):
        try:
            return conv(text)
        except ValueError:
            raise UserError(f"{flag} {text!r} is not a number") from None

    return parse


def _parser(prog: str, threshold: bool) -> argparse.ArgumentParser:
    p = _Parser(
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
    p.add_argument("--src-ip")
    p.add_argument("--dst-ip")
    p.add_argument("--src-port")
    p.add_argument("--dst-port")
    p.add_argument("--protocol", default="all", help="tcp, udp, icmp or all (default)")
    p.add_argument(
        "--interval", type=_number("--interval"), default=1.0, help="seconds (default 1)"
    )
    p.add_argument("--debug", action="store_true", help="per-stage debug counters")
    p.add_argument("--attach", default="auto", help="auto (default), fentry, kprobe, tracepoint")
    if threshold:
        p.add_argument(
            "--threshold-us",
            type=_number("--threshold-us"),
            required=True,
            help="report packets slower than this (microseconds)",
        )
        p.add_argument(
            "--max-events-per-sec", type=_number("--max-events-per-sec", int), default=100
        )
    p.add_argument("--duration", type=_number("--duration"), default=None, help=argparse.SUPPRESS)
    return p


def _main(prog: str, threshold: bool, argv: list[str] | None) -> int:
    from .filters import Filters
    from .watch import WatchOptions, run

    argv = sys.argv[1:] if argv is None else argv
    try:
        a = _parser(prog, threshold).parse_args(argv)
        filters = Filters.parse(a.src_ip, a.dst_ip, a.src_port, a.dst_port, a.protocol)
        return run(
            WatchOptions(
                interfaces=[a.interface],
                filters=filters,
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
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:
        sys.stderr.close()
        return 0


def latency_main(argv: list[str] | None = None) -> int:
    return _main("enqueue_to_iprec_latency", False, argv)


def threshold_main(argv: list[str] | None = None) -> int:
    return _main("enqueue_to_iprec_latency_threshold", True, argv)


if __name__ == "__main__":
    sys.exit(latency_main())
