"""`ovslat export`: measure like `watch`, serve the run's totals to Prometheus.

Data flows one way. The session loop follows OVSDB every 0.5 s and reads the
program every --interval, merges the interval into the run's total and
publishes both as one immutable Published; a scrape renders whatever was
published last (output/prometheus.py) and never touches a BPF map. Series and
their labels: docs/fleet.md.
"""

from __future__ import annotations

import sys
import time
from importlib import metadata

from ovslat import args as cli_args
from ovslat.args import add_engine, add_filters, add_target, add_timing, number
from ovslat.engine import session as session_mod
from ovslat.errors import UserError
from ovslat.model.snapshot import Snapshot
from ovslat.output import prometheus

BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


# ---- the command -------------------------------------------------------------


def add_arguments(p) -> None:
    add_target(
        p,
        "an OVS bridge: export its measurable interfaces, following ports as they come "
        "and go (metrics of a removed port are dropped)",
    )
    add_filters(p)
    add_engine(p)
    p.add_argument(
        "--listen",
        default=prometheus.DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve /metrics on (default {prometheus.DEFAULT_LISTEN}, loopback only)",
    )
    add_timing(
        p,
        "seconds between reads of the BPF maps (default 1); scrapes in between see the "
        "latest read",
        "stop after S seconds (default: until SIGINT/SIGTERM)",
    )
    p.add_argument(
        "--buckets-per-octave",
        type=number("--buckets-per-octave", int, "1, 2 or 4"),
        default=1,
        metavar="N",
        help="histogram le bounds per power of two: 1 (default), 2 or 4 (every kernel bucket); "
        "each is one series per histogram",
    )


def command(args) -> int:
    if not args.interface and not args.bridge:
        raise UserError(
            "nothing to export: name a bridge (ovslat export br-int) or interfaces with "
            "-i IFACE (repeatable)"
        )
    host, port = prometheus.parse_listen(args.listen)
    if args.buckets_per_octave not in prometheus.EDGES_PER_OCTAVE:
        raise UserError(f"--buckets-per-octave must be 1, 2 or 4, got {args.buckets_per_octave}")
    options = cli_args.watch_options(args)
    filters = options.filters
    session_mod.validate(options)
    session_mod.require_root()

    exposition = prometheus.Exposition(
        args.buckets_per_octave, {"version": _version(), "filters": filters.describe()}
    )
    # before attaching: a busy port fails fast
    server = prometheus.serve(host, port, prometheus.registry(exposition))
    try:
        with session_mod.Stop() as stop, session_mod.Session(options) as session:
            publisher = _Publisher(session, exposition, sys.stderr)
            # Publish at once: every series exists, at 0, before the first packet.
            publisher.interval(session.read())
            where = prometheus.where(host, port)
            print(
                f"ovslat: measuring {session.describe()}; serving http://{where}/metrics",
                file=sys.stderr,
                flush=True,
            )
            session_mod.loop(session, publisher, stop.event)
    finally:
        server.shutdown()
        server.server_close()
    return 0


class _Publisher:
    """watch.loop's output for the exporter: each interval is added to the
    run's total and published for scrapes; notes go to stderr, the program's
    own once, interface changes each time."""

    def __init__(self, session, exposition: prometheus.Exposition, err):
        self.session, self.exposition, self.err = session, exposition, err
        self.total: Snapshot | None = None
        self.collections = 0
        self._told: set[str] = set()

    def interval(self, snap: Snapshot, final: bool = False) -> None:
        self.total = snap if self.total is None else self.total.merge(snap)
        self.collections += 1
        self.exposition.publish(
            prometheus.Published(
                self.total,
                snap,
                _datapaths(self.session),
                self.collections,
                self.session.last_read_s,
                time.time(),
                _bpf_stats(),
            )
        )
        for note in snap.notes:
            if note not in self._told:
                print(f"ovslat: {note}", file=self.err, flush=True)
                if note in self.session.notes:
                    self._told.add(note)


def _datapaths(session) -> dict[str, str]:
    src = session.source
    return {src.name: src.current.datapath_type} if src else {}


def _bpf_stats() -> bool:
    try:
        with open(BPF_STATS) as f:
            return f.read().strip() != "0"
    except OSError:
        return False


def _version() -> str:
    try:
        return metadata.version("ovslat")
    except metadata.PackageNotFoundError:
        return "unknown"
