"""Command line. Every user-caused error ends as one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import signal
import sys

from ovslat import abi
from ovslat import args as cli_args
from ovslat.abi import BACKENDS
from ovslat.args import (
    Parser,
    add_db,
    add_engine,
    add_filters,
    add_max_events,
    add_target,
    add_timing,
    number,
)
from ovslat.errors import UserError, one_line_exit

SCENARIO_HELP = "a YAML file, or the name of one ovslat ships: demo, threshold, pattern4"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ovslat", description=__doc__)
    p.add_argument("--verbose", action="store_true", help="show tracebacks and bcc output")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    w = sub.add_parser(
        "watch",
        help="measure enqueue -> receive -> ip_rcv latency on interfaces",
        description="Measure enqueue_to_backlog -> __netif_receive_skb -> ip_rcv latency "
        "on every named interface at once, with one BPF program.",
    )
    add_target(
        w,
        "an OVS bridge: measure its uplinks, internal ports, VM ports and tunnel devices, "
        "following ports as they come and go",
    )
    add_filters(w)
    add_timing(
        w, "seconds between reports (default 1)", "stop after S seconds (default: until Ctrl-C)"
    )
    w.add_argument(
        "--format",
        default="auto",
        choices=("auto", "live", "text", "json"),
        help="auto (default): the live table on a terminal, else text",
    )
    add_engine(w)
    w.add_argument(
        "--threshold-us",
        type=number("--threshold-us"),
        default=None,
        metavar="US",
        help="report every packet whose enqueue -> receive latency exceeds US microseconds "
        "(stack, CPUs, flow, queue depth, receive context, diagnosis)",
    )
    w.add_argument(
        "--threshold-stage",
        default="enqueue_to_receive",
        choices=abi.THRESHOLD_STAGES,
        help="what --threshold-us applies to: S1 -> S2 on one interface (default), or the "
        "transit from one measured interface to the next (e.g. through the OVS datapath)",
    )
    add_max_events(w)
    w.add_argument(
        "--debug", action="store_true", help="add the seed tool's per-stage debug counters"
    )

    disc = sub.add_parser(
        "discover",
        help="show a bridge's interfaces, their roles and what can be measured",
    )
    disc.add_argument("bridge", metavar="BRIDGE")
    add_db(disc)
    disc.add_argument("--format", default="table", choices=("table", "json"))

    d = sub.add_parser(
        "demo",
        help="build a demo topology (namespace + OVS bridge + traffic) and measure it live",
    )
    add_timing(d, "seconds between reports (default 1)", "seconds to run (default 30)", 30.0)
    d.add_argument("--format", default="auto", choices=("auto", "live", "text", "json"))
    d.add_argument(
        "--pps",
        type=number("--pps"),
        default=2000.0,
        help="packets per second the demo client sends (default 2000)",
    )
    d.add_argument("--attach", default="auto", choices=("auto",) + BACKENDS)

    r = sub.add_parser(
        "run",
        help="run a scenario file: build, measure while the workload runs, assert, save",
        description="Run a scenario (YAML): build its topology, run setup, attach, run the "
        "workload while measuring, tear down, write a run directory (JSON lines, text report, "
        "summary.md, SVG plots) and judge its assertions: exit 0 when all pass, 1 when not.",
    )
    r.add_argument("scenario", metavar="SCENARIO", help=SCENARIO_HELP)
    r.add_argument("--out", metavar="DIR", help="run directory (default runs/NAME-TIMESTAMP)")
    r.add_argument(
        "--attach", default=None, choices=BACKENDS, help="override the scenario's backend"
    )

    rp = sub.add_parser(
        "report",
        help="re-render a saved run directory (no root, no kernel needed)",
    )
    rp.add_argument("run_dir", metavar="RUN_DIR")

    c = sub.add_parser(
        "check",
        help="validate a scenario, build it, attach and detach, without running the workload",
    )
    c.add_argument("scenario", metavar="SCENARIO", help=SCENARIO_HELP)
    c.add_argument("--attach", default=None, choices=BACKENDS)

    doc = sub.add_parser(
        "doctor",
        help="check whether ovslat can measure here (privileges, kernel, BTF, backends, OVS, RPS)",
        description="Check this host: privileges, kernel, BTF, bcc and headers, tracefs, which "
        "backends load and attach (each is tried), OVSDB and a bridge's interfaces, RPS, and the "
        "backlog sysctls and counters. One line per finding: OK, WARN or FAIL with the fix; "
        "exit 1 when anything FAILs.",
    )
    doc.add_argument("bridge", nargs="?", metavar="BRIDGE")
    add_db(doc)

    from ovslat.commands import export

    e = sub.add_parser(
        "export",
        help="serve the measurements as Prometheus/OpenMetrics metrics",
        description="Measure like watch, and serve the running totals on an HTTP endpoint "
        "for Prometheus to scrape.",
    )
    export.add_arguments(e)
    return p


def _demo(args) -> int:
    from ovslat.commands.demo import demo

    if not args.duration > 0 or not args.interval > 0 or not 0 < args.pps <= 100_000:
        raise UserError("--duration and --interval must be > 0 and --pps in (0, 100000]")
    return demo(args.duration, args.interval, args.format, args.pps, args.attach)


def _watch(args) -> int:
    from ovslat.commands.watch import run

    return run(
        cli_args.watch_options(
            args,
            fmt=args.format,
            debug=args.debug,
            threshold_us=args.threshold_us,
            threshold_stages=(args.threshold_stage,),
            max_events_per_sec=args.max_events_per_sec,
        )
    )


def _discover(args) -> int:
    from ovslat.commands.discover import discover

    return discover(args.bridge, args.db, args.format)


def _run(args) -> int:
    from ovslat.scenario.runner import run

    return run(args.scenario, args.out, args.attach)


def _check(args) -> int:
    from ovslat.scenario.runner import check

    return check(args.scenario, args.attach)


def _report(args) -> int:
    from ovslat.output.progress import print_run_result
    from ovslat.scenario import rundir, schema

    saved = rundir.load(args.run_dir)
    copy = saved.path / rundir.SCENARIO_COPY
    checks = schema.load(copy).checks if copy.exists() else ()
    ok, outcomes = rundir.render(saved, checks)
    print_run_result(saved, outcomes, ok, saved.run.get("file", str(copy)))
    return 0 if ok else 1


def _doctor(args) -> int:
    from ovslat.commands.doctor import doctor

    return doctor(args.bridge, args.db)


def _export(args) -> int:
    from ovslat.commands import export

    return export.command(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `kill -USR1 PID` prints every thread's Python stack to stderr: how a
    # stuck ovslat says where it is (the tests ask for it before they kill one)
    if sys.__stderr__ is not None:
        with contextlib.suppress(OSError, ValueError):  # an stderr without a file descriptor
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    commands = {
        "watch": _watch,
        "demo": _demo,
        "discover": _discover,
        "export": _export,
        "doctor": _doctor,
        "run": _run,
        "check": _check,
        "report": _report,
    }

    def command() -> int:
        args = build_parser().parse_args(argv)
        return commands[args.command](args)

    return one_line_exit("ovslat", command, verbose="--verbose" in argv)


if __name__ == "__main__":
    sys.exit(main())
