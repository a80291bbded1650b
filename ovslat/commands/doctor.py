"""`ovslat doctor [BRIDGE]`: can ovslat measure here, and what would it see?

Checks what the seed's "Common Issues" section leaves to the user, on this
host: privileges, kernel, BTF, bcc and its headers, tracefs, which backends
really load and attach (each is tried), OVSDB and the bridge's interfaces,
RPS, and the backlog sysctls and counters. Each finding is one line, OK /
WARN / FAIL, with the fix. Exit status 1 when anything FAILs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ovslat.abi import BACKENDS
from ovslat.errors import UserError

OK, WARN, FAIL, INFO = "OK", "WARN", "FAIL", "INFO"
SYSCTLS = ("netdev_max_backlog", "netdev_budget", "netdev_budget_usecs")


@dataclass(frozen=True)
class Finding:
    status: str
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<5} {self.check:<22} {self.detail}"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _privileges() -> list[Finding]:
    from ovslat.privileges import FOR_NAMESPACES, REQUIRED, missing

    lack = missing(REQUIRED)
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    if lack:
        out = [
            Finding(
                FAIL,
                "privileges",
                f"{who} lacks {name}, needed to {REQUIRED[name][1]}: run as root or grant it",
            )
            for name in lack
        ]
    else:
        out = [Finding(OK, "privileges", f"{who} with {', '.join(REQUIRED)}")]
    for name in missing(FOR_NAMESPACES):
        if not lack:
            out.append(Finding(WARN, "privileges", f"no {name}: cannot {FOR_NAMESPACES[name][1]}"))
    return out


def _kernel(ncpus: int) -> Finding:
    u = os.uname()
    return Finding(INFO, "kernel", f"Linux {u.release} ({u.machine}), {ncpus} possible CPUs")


def _btf():
    from ovslat.engine.kernel import KernelInfo

    path = "/sys/kernel/btf/vmlinux"
    if not os.path.exists(path):
        return None, Finding(
            FAIL,
            "BTF",
            f"{path} missing: struct offsets cannot be read; use a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y",
        )
    try:
        kernel = KernelInfo.probe()
    except UserError as e:
        return None, Finding(FAIL, "BTF", str(e))
    size = os.path.getsize(path) / (1 << 20)
    return kernel, Finding(
        OK, "BTF", f"{path} ({size:.1f} MiB): {len(kernel.offsets)} struct offsets read"
    )


def _headers() -> Finding:
    try:
        from ovslat.engine.program import bcc_version, header_tree

        version = bcc_version()
    except ImportError:
        return Finding(
            FAIL, "bcc", "python3-bpfcc is not importable: apt install python3-bpfcc (./dev setup)"
        )
    try:
        tree = header_tree()
    except UserError as e:
        return Finding(FAIL, "bcc", f"bcc {version}, but {e}")
    return Finding(OK, "bcc", f"bcc {version}, headers {tree.describe()}")


def _tracefs() -> Finding:
    # from the mount table: the directory itself is root-only
    mounts = [line.split() for line in (_read("/proc/self/mounts") or "").splitlines()]
    points = [m[1] for m in mounts if len(m) > 2 and m[2] == "tracefs"]
    if points:
        return Finding(OK, "tracefs", f"mounted at {', '.join(points)}")
    return Finding(
        FAIL, "tracefs", "not mounted: mount -t tracefs nodev /sys/kernel/tracing (./dev setup)"
    )


def _backends(kernel) -> list[Finding]:
    """Load and attach each backend for real, on lo, then detach."""
    from ovslat.discovery.netlink import resolve
    from ovslat.engine.program import EngineOptions, open_program

    out, usable = [], []
    try:
        from ovslat.engine.program import header_tree

        header_tree()
    except UserError:
        return [Finding(FAIL, "backends", "not tried: bcc has no header tree (see bcc above)")]
    lo = resolve("lo")
    for backend in BACKENDS:
        try:
            program = open_program(kernel, EngineOptions(backend, 1, 64))
        except UserError as e:
            reason = str(e).split("(", 1)[-1].rsplit(")", 1)[0] if "(" in str(e) else str(e)
            reason = reason.removeprefix(f"{backend}: ")
            out.append(Finding(WARN, f"backend {backend}", f"not usable here: {reason}"))
            continue
        try:
            program.add_interface(lo)
            s3 = program.s3
            s3_notes = "; ".join(n for n in program.notes if n.startswith("S3"))
            other = [n for n in program.notes if not n.startswith("S3")]
        finally:
            program.close()
        usable.append(backend)
        if s3:
            out.append(Finding(OK, f"backend {backend}", f"loads and attaches; S3 = {s3}"))
        else:
            out.append(
                Finding(WARN, f"backend {backend}", f"loads and attaches, but no S3 ({s3_notes})")
            )
        # optional parts this kernel lacks: the same for every backend, said once
        for note in other:
            if all(note not in f.detail for f in out):
                out.append(Finding(WARN, "optional parts", f"left out: {note}"))
    if usable:
        out.append(Finding(OK, "backend auto", f"would pick {usable[0]}"))
    else:
        out.append(
            Finding(
                FAIL,
                "backend auto",
                "no backend attaches: ovslat needs fentry (BTF + trampolines), kprobes "
                "(CONFIG_KPROBES) or tracepoints (CONFIG_TRACEPOINTS, tracefs)",
            )
        )
    return out


def _ovsdb(bridge: str | None, db: str) -> list[Finding]:
    from ovslat.discovery.ovsdb import Ovsdb

    try:
        conn = Ovsdb(db, timeout_s=3.0)
    except UserError as e:
        status = FAIL if bridge else WARN
        fix = "" if bridge else "; `watch -i IFACE` works without it"
        return [Finding(status, "OVSDB", f"{e}{fix}")]
    try:
        bridges = conn.bridges()
        out = [
            Finding(
                OK,
                "OVSDB",
                f"{db}: {len(bridges)} bridge(s)"
                + (": " + ", ".join(f"{b} ({t or 'system'})" for b, t in sorted(bridges.items())))
                if bridges
                else f"{db}: reachable, no bridges",
            )
        ]
        if bridge:
            out += _bridge(conn, bridge)
        return out
    finally:
        conn.close()


def _bridge(conn, bridge: str) -> list[Finding]:
    from ovslat.discovery.bridge import resolve
    from ovslat.discovery.topology import receive_path

    try:
        b = resolve(conn, bridge)
    except UserError as e:
        return [Finding(FAIL, f"bridge {bridge}", str(e))]
    out = [
        Finding(
            OK, f"bridge {bridge}", f"{b.datapath_type} datapath, {len(b.members)} interface(s)"
        )
    ]
    for m in b.members:
        rps = "" if not m.link else f", RPS {'on' if m.link.rps else 'off'}"
        what = f"{m.role}, device {m.device or '-'}{rps}"
        if m.link and m.link.napi:
            what = f"{m.role}, device {m.device}, receives through {receive_path(m.link)}"
        what += f", {m.workload}" if m.workload else ""
        what += f", its end {m.peer.name}@{m.peer.netns}" if m.peer else ""
        if m.reason:
            out.append(Finding(WARN, f"  {m.name}", f"{what}: not measurable: {m.reason}"))
        elif m.warning:
            out.append(Finding(WARN, f"  {m.name}", f"{what}: {m.warning}"))
        else:
            out.append(Finding(OK, f"  {m.name}", f"{what}: measurable"))
    if not b.measurable():
        out.append(Finding(FAIL, f"bridge {bridge}", "nothing on it can be measured"))
    return out


def _nics() -> list[Finding]:
    """NICs (and veths running XDP) receive through NAPI and GRO: with RPS
    through a backlog, without as GRO lists received in place (the seed's
    Issue 1), which ovslat counts as synchronous receives."""
    from ovslat.discovery import netlink
    from ovslat.discovery.topology import receive_path

    out = []
    for name, link in sorted(netlink.links().items()):
        if not link.napi:
            continue
        if link.rps:
            out.append(Finding(OK, f"NIC {name}", receive_path(link)))
        else:
            out.append(
                Finding(
                    WARN,
                    f"NIC {name}",
                    f"{receive_path(link)}; to measure a backlog's wait enable RPS: echo f > "
                    f"/sys/class/net/{name}/queues/rx-0/rps_cpus",
                )
            )
    return out


def _sysctls() -> list[Finding]:
    out = []
    values = {k: _read(f"/proc/sys/net/core/{k}") for k in SYSCTLS}
    out.append(
        Finding(INFO, "sysctl", ", ".join(f"net.core.{k}={v}" for k, v in values.items() if v))
    )
    rows = [line.split() for line in (_read("/proc/net/softnet_stat") or "").splitlines()]
    dropped = sum(int(r[1], 16) for r in rows if len(r) > 2)
    squeezed = sum(int(r[2], 16) for r in rows if len(r) > 2)
    if dropped:
        out.append(
            Finding(
                WARN,
                "backlog drops",
                f"{dropped} packets dropped at a full backlog since boot (softnet_stat): "
                f"raise net.core.netdev_max_backlog (now {values['netdev_max_backlog']})",
            )
        )
    else:
        out.append(Finding(OK, "backlog drops", "none since boot (softnet_stat)"))
    if squeezed:
        out.append(
            Finding(
                WARN,
                "softirq budget",
                f"net_rx_action ran out of budget {squeezed} times (time_squeeze): backlogs "
                f"waited for the next softirq; raise net.core.netdev_budget "
                f"(now {values['netdev_budget']}) or netdev_budget_usecs",
            )
        )
    stats = _read("/proc/sys/kernel/bpf_stats_enabled")
    out.append(
        Finding(
            INFO,
            "probe cost",
            "shown (kernel.bpf_stats_enabled=1)"
            if stats == "1"
            else "not shown: sysctl kernel.bpf_stats_enabled=1 to see ovslat's ns per packet",
        )
    )
    return out


def findings(bridge: str | None, db: str):
    """Yields findings as they are made (trying backends takes seconds)."""
    from ovslat.engine.kernel import possible_cpus

    yield _kernel(possible_cpus())
    privileges = _privileges()
    yield from privileges
    kernel, btf = _btf()
    yield btf
    yield _headers()
    yield _tracefs()
    if all(p.status != FAIL for p in privileges) and kernel is not None:
        yield from _backends(kernel)
    else:
        yield Finding(WARN, "backends", "not tried: needs the privileges above and BTF")
    yield from _ovsdb(bridge, db)
    yield from _nics()
    yield from _sysctls()


def doctor(bridge: str | None, db: str, out=None) -> int:
    out = out or sys.stdout
    counts = {OK: 0, WARN: 0, FAIL: 0, INFO: 0}
    for f in findings(bridge, db):
        counts[f.status] += 1
        print(f.line(), file=out, flush=True)
    verdict = "ovslat cannot run here" if counts[FAIL] else "ovslat can run here"
    print(f"{verdict}: {counts[FAIL]} FAIL, {counts[WARN]} WARN, {counts[OK]} OK", file=out)
    return 1 if counts[FAIL] else 0
