"""Scenario files (YAML, `version: 1`): what to build, measure, run and assert,
so an end-to-end measurement is one command instead of background PIDs.

The only module that imports PyYAML. Parsing keeps every value's line, so an
error names the file, the line and the field. The format is documented in
README ("Scenarios"); scenarios/ holds working examples.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, cast, overload

import yaml

from ovslat.abi import BACKENDS, THRESHOLD_STAGES
from ovslat.errors import UserError
from ovslat.model.filters import Filters
from ovslat.model.snapshot import STAGES, Counters

VERSION = 1
DATAPATHS = ("auto", "system", "netdev")
OPS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}
LATENCY_METRICS = ("count", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")
COUNTER_METRICS = tuple(Counters().as_dict())
HOP_STAGES = ("transit", "e2e")
STEP_KINDS = ("run", "shell", "udp", "frames")


@dataclass(frozen=True)
class Host:
    """A namespace joined to the topology's bridge by a veth: `port` is the
    bridge's end, the namespace's end holds `address`."""

    name: str
    address: ipaddress.IPv4Interface
    port: str
    # NAMESPACE/NAME: the host is a pod (its port written as Antrea writes
    # one); else a client behind a veth playing the uplink NIC
    pod: str = ""
    # the bridge's end receives like a physical NIC (NAPI + GRO, RPS off:
    # testbed.nic_like) instead of a plain veth's netif_rx()
    nic: bool = False


@dataclass(frozen=True)
class Vm:
    """A VM's tap on the bridge; a frames: step writes into it as the guest would."""

    name: str
    tap: str

    @property
    def uuid(self) -> str:
        """The VM's uuid as nova would write it (external_ids:vm-uuid), stable per name."""
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.name}.ovslat.invalid"))


@dataclass(frozen=True)
class Topology:
    """A private Open vSwitch (own ovsdb-server and ovs-vswitchd) with one
    bridge, and hosts in namespaces; built before the run, removed after."""

    datapath: str
    bridge: str
    bridge_address: ipaddress.IPv4Interface | None
    hosts: tuple[Host, ...]
    vms: tuple[Vm, ...] = ()


@dataclass(frozen=True)
class Udp:
    to: str
    port: int
    count: int | None = None  # exactly this many datagrams ...
    pps: float | None = None  # ... or a paced stream for duration_s
    duration_s: float | None = None
    src_port: int | None = None


@dataclass(frozen=True)
class Frames:
    """Exactly `count` Ethernet frames (IPv4 UDP to to:port) written into a VM's tap."""

    vm: str
    to: str
    port: int
    count: int


@dataclass(frozen=True)
class Step:
    name: str
    line: int
    argv: tuple[str, ...] = ()
    shell: str | None = None
    udp: Udp | None = None
    frames: Frames | None = None
    netns: str | None = None  # a topology host, or an existing named namespace
    background: bool = False  # runs beside the next steps, ended when they are done
    timeout_s: float = 60.0

    @property
    def kind(self) -> str:
        if self.shell is not None:
            return "shell"
        return "udp" if self.udp else "frames" if self.frames else "run"


@dataclass(frozen=True)
class Check:
    """One assertion on the run's summary: `metric op value` for an interface
    ("*": every measured interface) or a hop, at a stage."""

    line: int
    metric: str
    op: str
    value: float
    interface: str | None = None
    hop: tuple[str, str] | None = None
    stage: str | None = None

    def describe(self) -> str:
        who = self.interface if self.hop is None else f"{self.hop[0]} -> {self.hop[1]}"
        stage = f" {self.stage}" if self.stage else ""
        return f"{who}{stage} {self.metric} {OPS[self.op]} {self.value:g}"


@dataclass(frozen=True)
class Threshold:
    us: float
    stage: str = "enqueue_to_receive"
    max_events_per_sec: int = 100


@dataclass(frozen=True)
class Target:
    bridge: str | None = None
    db: str | None = None  # default: the topology's private OVS, else the system's
    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()  # workloads (NAMESPACE/NAME, vm:UUID) as discovery names them


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    target: Target
    filters: Filters = field(default_factory=Filters)
    backend: str = "auto"
    interval_s: float = 1.0
    warmup_s: float = 0.0
    duration_s: float | None = None  # None: until the workload's last step ends
    threshold: Threshold | None = None
    max_flows: int = 10240
    max_ifaces: int | None = None  # None: sized from the interfaces found
    topology: Topology | None = None
    setup: tuple[Step, ...] = ()
    workload: tuple[Step, ...] = ()
    teardown: tuple[Step, ...] = ()
    checks: tuple[Check, ...] = ()


# ---- YAML with line numbers ----------------------------------------------------


@dataclass(frozen=True)
class _Y:
    """A parsed value with where it came from."""

    value: object
    line: int
    path: str


class _Errors:
    def __init__(self, path: Path):
        self.file = str(path)

    def fail(self, y: _Y, message: str) -> NoReturn:
        where = y.path or "top level"
        raise UserError(f"{self.file}:{y.line}: {where}: {message}")


def _wrap(node, path: str, err: _Errors, construct) -> _Y:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _Y] = {}
        for k, v in node.value:
            key = construct(k) if isinstance(k, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                err.fail(_Y(None, k.start_mark.line + 1, path), f"key {key!r} is not a name")
            if key in out:
                err.fail(_Y(None, k.start_mark.line + 1, sub), "duplicate key")
            child = _wrap(v, sub, err, construct)
            # a value's errors point at its key's line ("target:"), not its first child's
            out[key] = _Y(child.value, k.start_mark.line + 1, sub)
        return _Y(out, line, path)
    if isinstance(node, yaml.SequenceNode):
        return _Y(
            [_wrap(v, f"{path}[{i}]", err, construct) for i, v in enumerate(node.value)], line, path
        )
    return _Y(construct(node), line, path)


def _parse_yaml(text: str, err: _Errors) -> _Y:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{err.file}:{line}: not valid YAML: {problem}") from None
    if node is None:
        raise UserError(f"{err.file}:1: the file is empty: a scenario starts with `version: 1`")
    loader = yaml.SafeLoader("")
    try:
        return _wrap(node, "", err, lambda n: loader.construct_object(n, deep=True))
    except yaml.YAMLError as e:
        raise UserError(f"{err.file}: not valid YAML: {e}") from None


# ---- typed fields ----------------------------------------------------------------


def _scalars(y: _Y):
    """A scalar's text, or a list of them (src_ip: [a, b])."""
    if isinstance(y.value, list):
        return [str(i.value) for i in y.value]
    return str(y.value)


class _Fields:
    """Reads one mapping's fields, each checked, with the file:line of the value."""

    def __init__(self, y: _Y, err: _Errors, allowed: tuple[str, ...], what: str):
        self.err, self.y = err, y
        if not isinstance(y.value, dict):
            err.fail(y, f"{what} must be a mapping (key: value), got {_kind(y.value)}")
        self.m: dict[str, _Y] = y.value
        for key, v in self.m.items():
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, 1)
                hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(allowed)}"
                err.fail(v, f"unknown field {key!r} ({hint})")

    def has(self, key: str) -> bool:
        return key in self.m

    def get(self, key: str) -> _Y | None:
        return self.m.get(key)

    def need(self, key: str, what: str = "") -> _Y:
        if key not in self.m:
            where = _Y(None, self.y.line, self.y.path)
            self.err.fail(where, f"missing field {key!r}" + (f" ({what})" if what else ""))
        return self.m[key]

    @overload
    def str_(self, key: str, default: str | None = None, *, need: Literal[True]) -> str: ...

    @overload
    def str_(self, key: str, default: str | None = None, need: bool = False) -> str | None: ...

    def str_(self, key: str, default: str | None = None, need: bool = False) -> str | None:
        y = self.need(key) if need else self.m.get(key)
        if y is None:
            return default
        if not isinstance(y.value, str) or not y.value:
            self.err.fail(y, f"must be a non-empty string, got {_kind(y.value)}")
        return y.value

    def num(self, key: str, lo: float, hi: float, default=None, integer=False, need=False):
        y = self.need(key) if need else self.m.get(key)
        if y is None:
            return default
        v = y.value
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (integer and isinstance(v, float))
        ):
            self.err.fail(y, f"must be {'an integer' if integer else 'a number'}, got {_kind(v)}")
        if not lo <= v <= hi:
            self.err.fail(y, f"must be between {lo:g} and {hi:g}, got {v:g}")
        return v

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        y = self.m.get(key)
        if y is None:
            return default
        if y.value not in options:
            self.err.fail(y, f"{y.value!r} is not one of {', '.join(options)}")
        return y.value

    def names(self, key: str) -> tuple[str, ...]:
        y = self.m.get(key)
        if y is None:
            return ()
        items = y.value if isinstance(y.value, list) else [y]
        out = []
        for item in items:
            if not isinstance(item.value, str) or not item.value:
                self.err.fail(item, f"must be a name, got {_kind(item.value)}")
            out.append(item.value)
        return tuple(out)


def _kind(v) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return f"a string ({v!r})"
    return f"{type(v).__name__} {v!r}"


def _cidr(y: _Y, err: _Errors) -> ipaddress.IPv4Interface:
    try:
        if not isinstance(y.value, str) or "/" not in y.value:
            raise ValueError
        return ipaddress.IPv4Interface(y.value)
    except ValueError:
        err.fail(y, f"{y.value!r} is not an IPv4 address with a prefix (e.g. 198.18.40.1/24)")


def _ifname(y: _Y, err: _Errors) -> str:
    v = y.value
    if not isinstance(v, str) or not 0 < len(v) <= 15 or "/" in v or " " in v:
        err.fail(y, f"{v!r} is not an interface name (1-15 characters, no '/' or spaces)")
    return v


# ---- sections --------------------------------------------------------------------


def _topology(y: _Y, err: _Errors) -> Topology:
    f = _Fields(y, err, ("datapath", "bridge", "hosts", "vms"), "topology")
    datapath = f.choice("datapath", DATAPATHS, "auto")
    b = _Fields(
        f.need("bridge", "name: and an optional address:"), err, ("name", "address"), "bridge"
    )
    bridge = _ifname(b.need("name"), err)
    addr = _cidr(b.need("address"), err) if b.has("address") else None
    hosts_y = f.need("hosts", "a list of {name, address, port}")
    if not isinstance(hosts_y.value, list) or not hosts_y.value:
        err.fail(hosts_y, "must be a non-empty list of hosts")
    hosts, seen = [], {bridge}
    for hy in hosts_y.value:
        h = _Fields(hy, err, ("name", "address", "port", "pod", "nic"), "a host")
        name = h.str_("name", need=True)
        port = _ifname(h.need("port", "the bridge's end of the host's veth"), err)
        address_y = h.need("address")
        address = _cidr(address_y, err)
        for label, v in (("host", name), ("port", port)):
            if v in seen:
                err.fail(hy, f"{label} name {v!r} is used twice")
            seen.add(v)
        if addr and address.network != addr.network:
            err.fail(address_y, f"{address} is not in the bridge's network {addr.network}")
        pod = h.str_("pod") or ""
        if pod and not _POD.fullmatch(pod):
            err.fail(h.need("pod"), f"{pod!r} is not NAMESPACE/NAME (Kubernetes names)")
        nic_y = h.get("nic")
        if nic_y is not None and not isinstance(nic_y.value, bool):
            err.fail(nic_y, "must be true or false")
        if nic_y is not None and nic_y.value and pod:
            err.fail(nic_y, "a pod's port is no NIC: nic is for a host behind an uplink")
        hosts.append(Host(name, address, port, pod, bool(nic_y and nic_y.value)))
    vms: list[Vm] = []
    vms_y = f.get("vms")
    if vms_y is not None and not isinstance(vms_y.value, list):
        err.fail(vms_y, "must be a list of {name, tap}")
    vm_items = cast(list, vms_y.value) if vms_y is not None else []
    for vy in vm_items:
        vf = _Fields(vy, err, ("name", "tap"), "a vm")
        vm_name = vf.str_("name", need=True)
        tap = _ifname(vf.need("tap", "the VM's tap device, a port of the bridge"), err)
        for label, val in (("vm", vm_name), ("tap", tap)):
            if val in seen:
                err.fail(vy, f"{label} name {val!r} is used twice")
            seen.add(val)
        vms.append(Vm(vm_name, tap))
    return Topology(datapath, bridge, addr, tuple(hosts), tuple(vms))


# a DNS-1123 label each: what a Kubernetes namespace and pod name can be
_POD = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?")


def _frames(y: _Y, err: _Errors) -> Frames:
    f = _Fields(y, err, ("vm", "to", "port", "count"), "frames")
    vm = f.str_("vm", need=True)
    to = _ipv4(f.need("to"), err)
    port = f.num("port", 0, 65535, integer=True, need=True)
    count = f.num("count", 1, 1_000_000, integer=True, need=True)
    return Frames(vm, to, port, count)


def _ipv4(y: _Y, err: _Errors) -> str:
    try:
        if not isinstance(y.value, str):
            raise ValueError
        ipaddress.IPv4Address(y.value)
    except ValueError:
        err.fail(y, f"{y.value!r} is not an IPv4 address")
    return y.value


def _argv(y: _Y, err: _Errors) -> tuple[str, ...]:
    if not isinstance(y.value, list) or not y.value:
        err.fail(y, "must be a command as a non-empty list of arguments, e.g. [ping, -c, 3, HOST]")
    out = []
    for a in y.value:
        if isinstance(a.value, bool) or not isinstance(a.value, str | int | float):
            err.fail(a, f"an argument must be a string or a number, got {_kind(a.value)}")
        out.append(str(a.value))
    return tuple(out)


def _udp(y: _Y, err: _Errors) -> Udp:
    f = _Fields(y, err, ("to", "port", "count", "pps", "duration_s", "src_port"), "udp")
    to = _ipv4(f.need("to"), err)
    port = f.num("port", 0, 65535, integer=True, need=True)
    count = f.num("count", 1, 10_000_000, integer=True)
    pps = f.num("pps", 1, 100_000)
    duration = f.num("duration_s", 0.1, 3600)
    src_port = f.num("src_port", 1, 65535, integer=True)
    if count is None and pps is None:
        err.fail(y, "give count: (exactly that many datagrams), pps: with duration_s:, or both")
    if count is None and duration is None:
        err.fail(y, "pps: without count: needs duration_s: (how long to send)")
    if count is not None and duration is not None:
        err.fail(f.need("duration_s"), "duration_s: goes with pps:, not with count:")
    return Udp(to, port, count, pps, duration, src_port)


def _steps(y: _Y | None, err: _Errors, section: str) -> tuple[Step, ...]:
    if y is None:
        return ()
    if not isinstance(y.value, list):
        err.fail(y, f"{section} must be a list of steps")
    steps = []
    for sy in y.value:
        f = _Fields(sy, err, ("name", *STEP_KINDS, "netns", "background", "timeout_s"), "a step")
        kinds = [k for k in STEP_KINDS if f.has(k)]
        if len(kinds) != 1:
            err.fail(
                sy,
                "a step has exactly one of run: (argv list), shell: (a string), udp: or frames:",
            )
        kind = kinds[0]
        bg = f.get("background")
        if bg is not None and not isinstance(bg.value, bool):
            err.fail(bg, f"must be true or false, got {_kind(bg.value)}")
        background = bool(bg and bg.value)
        if bg is not None and background and section != "workload":
            err.fail(bg, "only workload steps can run in the background")
        argv = _argv(f.need("run"), err) if kind == "run" else ()
        shell = f.str_("shell") if kind == "shell" else None
        udp = _udp(f.need("udp"), err) if kind == "udp" else None
        frames = _frames(f.need("frames"), err) if kind == "frames" else None
        udp_name = f"udp to {udp.to}:{udp.port}" if udp is not None else ""
        if frames is not None:
            udp_name = f"{frames.count} frames from {frames.vm} to {frames.to}:{frames.port}"
        name = f.str_("name") or (shell or " ".join(argv) or udp_name)[:60]
        steps.append(
            Step(
                name,
                sy.line,
                argv,
                shell,
                udp,
                frames,
                f.str_("netns"),
                background,
                f.num("timeout_s", 0.1, 3600, 60.0),
            )
        )
    return tuple(steps)


def _checks(y: _Y | None, err: _Errors) -> tuple[Check, ...]:
    if y is None:
        return ()
    if not isinstance(y.value, list):
        err.fail(y, "assert must be a list of checks")
    out = []
    metrics = COUNTER_METRICS + LATENCY_METRICS
    for cy in y.value:
        f = _Fields(cy, err, ("interface", "hop", "stage", *metrics), "a check")
        if f.has("interface") == f.has("hop"):
            err.fail(cy, 'a check names exactly one of interface: (or "*") or hop: {from:, to:}')
        interface = hop = None
        if f.has("interface"):
            interface = f.str_("interface")
            stages = STAGES
        else:
            h = _Fields(f.need("hop"), err, ("from", "to"), "hop")
            hop = (h.str_("from", need=True), h.str_("to", need=True))
            stages = HOP_STAGES
        stage: str | None = "transit" if hop else None
        stage_y = f.get("stage")
        if stage_y is not None:
            if not isinstance(stage_y.value, str) or stage_y.value not in stages:
                err.fail(stage_y, f"{stage_y.value!r} is not one of {', '.join(stages)}")
            stage = stage_y.value
        given = [m for m in metrics if f.has(m)]
        if not given:
            err.fail(cy, f"a check needs a metric: one of {', '.join(metrics)}")
        for m in given:
            my = f.need(m)
            if hop and m in COUNTER_METRICS:
                err.fail(my, f"{m} is an interface counter; a hop has {', '.join(LATENCY_METRICS)}")
            if m in LATENCY_METRICS and not stage:
                err.fail(my, f"{m} needs stage: ({', '.join(stages)})")
            cmp = _Fields(my, err, tuple(OPS), f"{m}")
            if len(cmp.m) != 1:
                err.fail(my, f"give one comparison, e.g. {{lt: 100}} ({', '.join(OPS)})")
            (op,) = cmp.m
            value = cmp.num(op, -1e18, 1e18)
            out.append(Check(cmp.m[op].line, m, op, float(value), interface, hop, stage))
    return tuple(out)


TOP = (
    "version",
    "name",
    "description",
    "topology",
    "target",
    "filters",
    "backend",
    "interval_s",
    "warmup_s",
    "duration_s",
    "threshold",
    "max_flows",
    "max_ifaces",
    "setup",
    "workload",
    "teardown",
    "assert",
)


def parse(text: str, path: Path) -> Scenario:
    err = _Errors(path)
    root = _parse_yaml(text, err)
    f = _Fields(root, err, TOP, "a scenario")
    version = f.need("version", "the format's version: 1")
    if version.value != VERSION:
        err.fail(
            version, f"unsupported version {version.value!r}: this ovslat reads version {VERSION}"
        )
    topology = _topology(f.need("topology"), err) if f.has("topology") else None

    t = _Fields(
        f.need("target", "bridge: and/or interfaces:"),
        err,
        ("bridge", "db", "only", "exclude", "interfaces", "pods"),
        "target",
    )
    interfaces = t.names("interfaces")
    iy = t.get("interfaces")
    for item in (iy.value if isinstance(iy.value, list) else [iy]) if iy else []:
        spec = cast(str, item.value)  # t.names() above checked it is a non-empty string
        _ifname(_Y(spec.split("@")[0], item.line, item.path), err)
    target = Target(
        t.str_("bridge"),
        t.str_("db"),
        t.names("only"),
        t.names("exclude"),
        interfaces,
        t.names("pods"),
    )
    if not target.bridge and not target.interfaces:
        err.fail(f.need("target"), "name a bridge: or interfaces: to measure")
    if (target.only or target.exclude or target.pods) and not target.bridge:
        err.fail(f.need("target"), "only:/exclude:/pods: select from a bridge: name one")
    from ovslat.discovery.topology import ROLES

    for role in target.only:
        if role not in ROLES:
            err.fail(t.need("only"), f"unknown role {role!r}: use {', '.join(ROLES)}")

    filters = Filters()
    if f.has("filters"):
        keys = ("src_ip", "dst_ip", "family", "src_port", "dst_port", "protocol")
        ff = _Fields(f.need("filters"), err, keys, "filters")
        raw = {k: (_scalars(ff.need(k)) if ff.has(k) else None) for k in keys}
        try:
            filters = Filters.parse(
                raw["src_ip"],
                raw["dst_ip"],
                raw["src_port"],
                raw["dst_port"],
                raw["protocol"] or "all",
                raw["family"],
            )
        except UserError as e:
            bad = next(
                (ff.need(k) for k in keys if ff.has(k) and k.replace("_", "-") in str(e)),
                f.need("filters"),
            )
            err.fail(bad, str(e))

    threshold = None
    if f.has("threshold"):
        th = _Fields(f.need("threshold"), err, ("us", "stage", "max_events_per_sec"), "threshold")
        threshold = Threshold(
            th.num("us", 0, 60e6, need=True),
            th.choice("stage", THRESHOLD_STAGES, "enqueue_to_receive"),
            th.num("max_events_per_sec", 1, 100_000, 100, integer=True),
        )

    workload = _steps(f.get("workload"), err, "workload")
    duration = f.num("duration_s", 0.1, 86400)
    if not any(not s.background for s in workload) and duration is None:
        err.fail(
            f.get("workload") or root,
            "with no foreground workload step, set duration_s: (how long to measure)",
        )
    vm_names = {v.name for v in topology.vms} if topology else set()
    setup_steps = _steps(f.get("setup"), err, "setup")
    for s in (*workload, *setup_steps):
        if s.udp and not s.netns:
            err.fail(_Y(None, s.line, "workload"), "a udp: step needs netns: (the sending host)")
        if s.frames and s.frames.vm not in vm_names:
            err.fail(
                _Y(None, s.line, "workload"),
                f"frames: vm {s.frames.vm!r} is not one of the topology's vms: "
                f"({', '.join(sorted(vm_names)) or 'none'})",
            )

    return Scenario(
        path=path,
        name=f.str_("name") or path.stem,
        description=f.str_("description") or "",
        target=target,
        filters=filters,
        backend=f.choice("backend", ("auto",) + BACKENDS, "auto"),
        interval_s=f.num("interval_s", 0.05, 3600, 1.0),
        warmup_s=f.num("warmup_s", 0, 3600, 0.0),
        duration_s=duration,
        threshold=threshold,
        max_flows=f.num("max_flows", 1, 1 << 24, 10240, integer=True),
        max_ifaces=f.num("max_ifaces", 1, 65536, None, integer=True),
        topology=topology,
        setup=setup_steps,
        workload=workload,
        teardown=_steps(f.get("teardown"), err, "teardown"),
        checks=_checks(f.get("assert"), err),
    )


def load(path: str | Path) -> Scenario:
    p = Path(path)
    if not p.exists() and p.parent == Path("."):
        # a bare name that is no file here: one of the scenarios ovslat ships
        # (`ovslat run demo` on an installed ovslat)
        from ovslat.data import shipped_scenario

        p = shipped_scenario(str(path)) or p
    try:
        text = p.read_text()
    except OSError as e:
        raise UserError(f"cannot read scenario {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UserError(f"cannot read scenario {p}: not a text file") from None
    return parse(text, p)
