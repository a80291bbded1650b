"""Command-line arguments shared by `watch`, `export` and the seed-compatible
commands: what to measure, the filters, the engine's sizes. A value that does
not parse is a UserError (one line, exit 2), like every other bad input."""

from __future__ import annotations

import argparse

from ovslat.abi import BACKENDS
from ovslat.discovery import DEFAULT_DB
from ovslat.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as UserErrors instead of usage + exit 2."""

    def error(self, message):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def number(flag: str, conv=float, what: str = "a number"):
    def parse(text):
        try:
            return conv(text)
        except ValueError:
            raise UserError(f"{flag} {text!r} is not {what}") from None

    return parse


def seconds(flag: str):
    return number(flag, float, "a number of seconds")


def integer(flag: str):
    return number(flag, int, "an integer")


def add_db(p) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help=f"OVSDB socket (default {DEFAULT_DB})")


def add_target(p, bridge_help: str) -> None:
    """BRIDGE, -i IFACE[@NETNS] ..., --db, --only, --exclude."""
    p.add_argument("bridge", nargs="?", metavar="BRIDGE", help=bridge_help)
    p.add_argument(
        "-i",
        "--interface",
        action="append",
        default=[],
        metavar="IFACE[@NETNS]",
        help="interface to measure (repeatable); IFACE@NETNS for a named netns",
    )
    add_db(p)
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ROLE",
        help="with BRIDGE: only these roles (uplink, internal, pod, vm, tunnel); repeatable",
    )
    p.add_argument(
        "--pod",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME",
        help="with BRIDGE: only this workload's interfaces among the workloads' (pods, VMs "
        "as `discover` names them; the uplinks and internal ports stay); repeatable",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="IFACE",
        help="with BRIDGE: leave this interface out; repeatable",
    )


def add_timing(p, interval_help: str, duration_help: str, duration_s: float | None = None) -> None:
    """--interval S (default 1) and --duration S."""
    p.add_argument(
        "--interval", type=seconds("--interval"), default=1.0, metavar="S", help=interval_help
    )
    p.add_argument(
        "--duration",
        type=seconds("--duration"),
        default=duration_s,
        metavar="S",
        help=duration_help,
    )


def add_filters(p) -> None:
    p.add_argument(
        "--src-ip",
        action="append",
        metavar="ADDR[/LEN]",
        help="source address or network, IPv4 or IPv6; repeat or comma-separate for several",
    )
    p.add_argument(
        "--dst-ip",
        action="append",
        metavar="ADDR[/LEN]",
        help="destination address or network, IPv4 or IPv6; repeat or comma-separate",
    )
    p.add_argument("--family", default="all", help="4, 6 or all (default): IPv4, IPv6 or both")
    p.add_argument("--src-port")
    p.add_argument("--dst-port")
    p.add_argument(
        "--protocol", default="all", help="tcp, udp, icmp (IPv4), icmpv6 or all (default)"
    )


def add_engine(p) -> None:
    """--attach, --max-flows, --max-ifaces."""
    p.add_argument(
        "--attach",
        default="auto",
        choices=("auto",) + BACKENDS,
        help="attach backend (default auto: fentry, else kprobe, else tracepoint)",
    )
    p.add_argument(
        "--max-flows",
        type=integer("--max-flows"),
        default=10240,
        help="packets in flight tracked between S1 and S2 (default 10240)",
    )
    p.add_argument(
        "--max-ifaces",
        type=integer("--max-ifaces"),
        default=None,
        help="interface slots in the BPF maps (default: twice the interfaces found at "
        "start plus 64, at least 64; a slot is never reused within a run)",
    )


def add_max_events(p, what: str = "slow-packet events reported") -> None:
    """--max-events-per-sec: the kernel-side rate limit of slow-packet events."""
    p.add_argument(
        "--max-events-per-sec",
        type=integer("--max-events-per-sec"),
        default=100,
        help=f"{what} per second at most; the rest are counted (default 100)",
    )


def filters(a):
    from ovslat.model.filters import Filters

    return Filters.parse(
        a.src_ip, a.dst_ip, a.src_port, a.dst_port, a.protocol, getattr(a, "family", None)
    )


def roles(a) -> frozenset[str]:
    """--only, comma-separated or repeated; an error without a BRIDGE."""
    only = frozenset(r.strip() for v in a.only for r in v.split(",") if r.strip())
    if (only or a.exclude or a.pod) and not a.bridge:
        raise UserError("--only/--exclude/--pod need a BRIDGE to select from")
    return only


def watch_options(a, **extra):
    """WatchOptions from the arguments add_target/add_filters/add_engine made,
    plus --interval and --duration; `extra` for a command's own."""
    from ovslat.engine.session import WatchOptions

    return WatchOptions(
        interfaces=a.interface,
        bridge=a.bridge,
        db=a.db,
        only=roles(a),
        exclude=frozenset(a.exclude),
        workloads=frozenset(a.pod),
        filters=filters(a),
        interval_s=a.interval,
        duration_s=a.duration,
        backend=a.attach,
        max_flows=a.max_flows,
        max_ifaces=a.max_ifaces,
        **extra,
    )
