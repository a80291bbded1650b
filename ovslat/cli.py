"""Command line. Every user-caused error ends as one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError
from .filters import Filters
from .kernel import BACKENDS

EXIT_USER = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _float(flag):
    def conv(text):
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{flag} {text!r} is not a number of seconds") from None

    return conv


def _int(flag):
    def conv(text):
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{flag} {text!r} is not an integer") from None

    return conv


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ovslat", description=__doc__)
    p.add_argument("--verbose", action="store_true", help="show tracebacks and bcc output")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    w = sub.add_parser(
        "watch",
        help="measure enqueue -> receive -> ip_rcv latency on interfaces",
        description="Measure enqueue_to_backlog -> __netif_receive_skb -> ip_rcv latency "
        "on every named interface at once, with one BPF program.",
    )
    w.add_argument(
        "-i",
        "--interface",
        action="append",
        default=[],
        metavar="IFACE[@NETNS]",
        help="interface to measure (repeatable); IFACE@NETNS for a named netns",
    )
    w.add_argument("--src-ip")
    w.add_argument("--dst-ip")
    w.add_argument("--src-port")
    w.add_argument("--dst-port")
    w.add_argument("--protocol", default="all", help="tcp, udp, icmp or all (default)")
    w.add_argument(
        "--interval",
        type=_float("--interval"),
        default=1.0,
        metavar="S",
        help="seconds between reports (default 1)",
    )
    w.add_argument(
        "--duration",
        type=_float("--duration"),
        default=None,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    w.add_argument("--format", default="text", choices=("text", "json"))
    w.add_argument(
        "--attach",
        default="auto",
        choices=("auto",) + BACKENDS,
        help="attach backend (default auto: fentry, else kprobe, else tracepoint)",
    )
    w.add_argument(
        "--max-flows",
        type=_int("--max-flows"),
        default=10240,
        help="packets in flight tracked between S1 and S2 (LRU, default 10240)",
    )
    w.add_argument(
        "--max-ifaces",
        type=_int("--max-ifaces"),
        default=64,
        help="interface slots in the BPF maps (default 64)",
    )
    w.add_argument(
        "--debug", action="store_true", help="add the seed tool's per-stage debug counters"
    )
    return p


def _watch(args) -> int:
    from .watch import WatchOptions, run

    filters = Filters.parse(args.src_ip, args.dst_ip, args.src_port, args.dst_port, args.protocol)
    return run(
        WatchOptions(
            interfaces=args.interface,
            filters=filters,
            interval_s=args.interval,
            duration_s=args.duration,
            fmt=args.format,
            backend=args.attach,
            max_flows=args.max_flows,
            max_ifaces=args.max_ifaces,
            debug=args.debug,
        )
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    try:
        args = build_parser().parse_args(argv)
        return {"watch": _watch}[args.command](args)
    except UserError as e:
        print(f"ovslat: error: {e}", file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:
        # stdout closed by the reader (e.g. `| head`): not an error worth a traceback.
        sys.stderr.close()
        return 0
    except Exception as e:
        if verbose:
            raise
        print(
            f"ovslat: error: {type(e).__name__}: {e} (rerun with --verbose for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
