"""`ovslat run SCENARIO` and `ovslat check SCENARIO`.

run: build the topology, run the setup steps, attach, run the workload while
measuring, stop, run the teardown steps, remove the topology, then write the
run directory and judge the assertions (exit 0 all passed, 1 not). Teardown
and topology removal happen whatever went wrong before them.
check: the same up to attaching, then detach and undo; no workload.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ovslat.discovery import DEFAULT_DB
from ovslat.engine.session import Session, Stop, WatchOptions, loop, require_root, start_threshold
from ovslat.errors import EXIT_FAILED, StepFailed, UserError
from ovslat.model import events
from ovslat.output import jsonl
from ovslat.scenario import rundir, schema, testbed
from ovslat.scenario.schema import Scenario, Step

# After the last workload step, wait this long before the last read, so
# packets still in a backlog or an OVS upcall are counted.
DRAIN_S = 0.5


# ---- topology ---------------------------------------------------------------------


def _build(topo: schema.Topology | None, stack: contextlib.ExitStack) -> tuple[dict, str | None]:
    """Build it; returns (host name -> namespace name, the private OVSDB socket)."""
    if topo is None:
        return {}, None
    datapath = topo.datapath
    if datapath == "auto":
        datapath = "system" if testbed.kernel_datapath() else "netdev"
    elif datapath == "system" and not testbed.kernel_datapath():
        raise UserError(
            "topology datapath: system needs the openvswitch kernel module, which does not "
            "load here; use datapath: auto or netdev"
        )
    try:
        ovs = stack.enter_context(testbed.OvsDaemons(datapath))
        ovs.add_bridge(topo.bridge)
        hosts = {}
        for h in topo.hosts:
            ns = stack.enter_context(testbed.Netns(h.name))
            testbed.veth(h.port, ns, "eth0", None, str(h.address.ip), h.address.network.prefixlen)
            if h.pod:  # its port as Antrea writes a pod's
                namespace, _, name = h.pod.partition("/")
                ids = {"pod-namespace": namespace, "pod-name": name, "container-id": ns.name}
                ovs.add_port(topo.bridge, h.port, *testbed.external_ids(ids))
            else:
                if h.nic:
                    testbed.nic_like(h.port)
                ovs.add_port(topo.bridge, h.port, testbed.AS_UPLINK)
            hosts[h.name] = ns.name
        for vm in topo.vms:
            testbed.tap(vm.tap)
            stack.callback(testbed.sh, "ip", "link", "del", vm.tap, check=False)
            ovs.add_port(topo.bridge, vm.tap, *testbed.external_ids({"vm-uuid": vm.uuid}))
        if topo.bridge_address:
            a = topo.bridge_address
            testbed.address_port(topo.bridge, str(a.ip), a.network.prefixlen)
            if datapath == "netdev":
                # The netdev datapath's internal port is a tap, which receives
                # through the backlog only with RPS on.
                mask = format((1 << (os.cpu_count() or 1)) - 1, "x")
                stack.enter_context(testbed.rps(topo.bridge, mask))
            for h in topo.hosts:  # resolve ARP before measuring
                testbed.sh(
                    "ip",
                    "netns",
                    "exec",
                    hosts[h.name],
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "2",
                    "-i",
                    "0.05",
                    "-W",
                    "5",
                    str(a.ip),
                    check=False,
                )
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or "").strip().splitlines()[-1:] or [f"exit {e.returncode}"]
        raise UserError(
            f"building the topology: `{' '.join(map(str, e.cmd))}` failed: {detail[0]} "
            "(are these interface names already in use?)"
        ) from None
    except TimeoutError as e:
        raise UserError(f"building the topology: {e}") from None
    return hosts, ovs.db_sock


# ---- steps ------------------------------------------------------------------------


def _netns_of(step: Step, hosts: dict, sc: Scenario) -> str | None:
    if step.netns is None:
        return None
    if step.netns in hosts:
        return hosts[step.netns]
    if os.path.exists(f"/run/netns/{step.netns}"):
        return step.netns
    raise UserError(
        f"{sc.path}:{step.line}: netns {step.netns!r} is neither a topology host nor a named "
        "network namespace (see `ip netns list`)"
    )


def _mac_for(addr: str, hosts: dict, sc: Scenario) -> str | None:
    """Where a VM's frame to `addr` goes on the wire: the topology host's eth0
    or the bridge port holding it, so OVS forwards it there and nowhere else;
    else the tap's own MAC (the host takes it)."""
    topo = sc.topology
    assert topo is not None
    for h in topo.hosts:
        if str(h.address.ip) == addr and h.name in hosts:
            r = testbed.sh(
                "ip", "netns", "exec", hosts[h.name], "cat", "/sys/class/net/eth0/address"
            )
            return r.stdout.strip()
    if topo.bridge_address and str(topo.bridge_address.ip) == addr:
        return testbed.mac_of(topo.bridge)
    return None


def _argv(step: Step, hosts: dict, sc: Scenario) -> list[str]:
    if step.shell is not None:
        cmd = ["/bin/sh", "-c", step.shell]
    elif step.udp:
        u = step.udp
        cmd = testbed.udp_argv(u.to, u.port, u.count, u.pps, u.duration_s, u.src_port)
    elif step.frames:
        fr = step.frames
        assert sc.topology is not None  # schema: frames: names a topology vm
        (vm,) = (v for v in sc.topology.vms if v.name == fr.vm)
        cmd = testbed.tap_argv(
            vm.tap, fr.count, "198.18.255.254", fr.to, fr.port, dst_mac=_mac_for(fr.to, hosts, sc)
        )
    else:
        cmd = list(step.argv)
    ns = _netns_of(step, hosts, sc)
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd


class _Steps:
    """Runs steps, logging their output; a running step can be stopped."""

    def __init__(self, sc: Scenario, hosts: dict, log, env: dict):
        self.sc, self.hosts, self.log, self.env = sc, hosts, log, env
        self.abort = threading.Event()
        self.results: list[dict] = []

    def _start(self, step: Step) -> subprocess.Popen:
        argv = _argv(step, self.hosts, self.sc)
        shown = f"ovslat's UDP sender ({step.udp})" if step.udp else " ".join(argv)
        self.log.write(f"--- {step.name} (line {step.line}): {shown}\n")
        self.log.flush()
        try:
            return subprocess.Popen(
                argv, stdout=self.log, stderr=self.log, env=self.env, start_new_session=True
            )
        except OSError as e:
            raise UserError(
                f"{self.sc.path}:{step.line}: cannot run {argv[0]!r}: {e.strerror or e}"
            ) from None

    def _end(self, proc: subprocess.Popen) -> None:
        # Our own child, by pid; its group too (a shell's children), which we made.
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def _record(self, step: Step, status, t0: float) -> None:
        self.results.append(
            {
                "name": step.name,
                "line": step.line,
                "status": status,
                "seconds": time.monotonic() - t0,
            }
        )
        self.log.write(f"--- {step.name}: {status}\n")
        self.log.flush()

    def run(self, steps: tuple[Step, ...], hold_background: bool = False) -> bool:
        """Foreground steps one after another; background ones beside them,
        ended once the foreground ones are done (with none, or with
        hold_background, when the run ends: abort). False at the first failure."""
        background = []
        ok = True
        foreground = any(not s.background for s in steps)
        for step in steps:
            t0 = time.monotonic()
            if self.abort.is_set() or not ok:
                self._record(step, "not run", t0)
                continue
            proc = self._start(step)
            if step.background:
                background.append((step, proc, t0))
                continue
            deadline = t0 + step.timeout_s
            while proc.poll() is None and not self.abort.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None:
                status: int | str | None = "timeout" if time.monotonic() >= deadline else "stopped"
                self._end(proc)
            else:
                status = proc.returncode
            self._record(step, status, t0)
            ok = status in (0, "stopped")
        if background and (hold_background or not foreground):
            self.abort.wait()
        for step, proc, t0 in background:
            status = proc.poll()
            if status is None:
                self._end(proc)
                status = "stopped"
            self._record(step, status, t0)
            ok = ok and status in (0, "stopped")
        return ok


def _prepare(sc: Scenario, stack: contextlib.ExitStack, log, env: dict) -> tuple[dict, str | None]:
    """Build the topology and run the setup steps; teardown is registered on
    `stack` before setup runs, so it runs whatever happens next. Returns
    (host name -> namespace, private OVSDB socket)."""
    hosts, db = _build(sc.topology, stack)
    for step in sc.setup + sc.workload + sc.teardown:
        _argv(step, hosts, sc)  # every netns resolves, before anything runs
    stack.callback(_Steps(sc, hosts, log, env).run, sc.teardown)
    setup = _Steps(sc, hosts, log, env)
    if not setup.run(sc.setup):
        failed = setup.results[-1]
        raise StepFailed(
            f"setup step {failed['name']!r} (line {failed['line']}) gave {failed['status']}"
        )
    return hosts, db


# ---- run --------------------------------------------------------------------------


def _options(sc: Scenario, db: str | None, backend: str | None) -> WatchOptions:
    t = sc.target
    return WatchOptions(
        interfaces=list(t.interfaces),
        bridge=t.bridge,
        db=t.db or db or DEFAULT_DB,
        only=frozenset(t.only),
        exclude=frozenset(t.exclude),
        workloads=frozenset(t.pods),
        filters=sc.filters,
        interval_s=sc.interval_s,
        duration_s=sc.duration_s,
        fmt="json",
        backend=backend or sc.backend,
        max_flows=sc.max_flows,
        max_ifaces=sc.max_ifaces,
        threshold_us=sc.threshold.us if sc.threshold else None,
        threshold_stages=(sc.threshold.stage if sc.threshold else "enqueue_to_receive",),
        max_events_per_sec=sc.threshold.max_events_per_sec if sc.threshold else 100,
    )


def _run_dir(out: str | None, sc: Scenario) -> Path:
    path = Path(out) if out else Path("runs") / f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and any(path.iterdir()):
        raise UserError(f"run directory {path} exists and is not empty; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {path}: {e.strerror or e}") from None
    return path


class _Recorder:
    """What the measurement loop reports goes to measurements.jsonl and the progress display."""

    def __init__(self, f, context: dict, progress):
        self.f, self.context, self.progress = f, context, progress
        self.phase = "measure"

    def write(self, line: str) -> None:
        self.f.write(line + "\n")
        self.f.flush()

    def record(self, obj: dict) -> None:
        self.write(json.dumps(obj, separators=(",", ":")))

    def start(self, snap) -> None:
        self.write(jsonl.record(snap, "start", self.context))

    def interval(self, snap, final: bool = False) -> None:
        phase = {"phase": "warmup"} if self.phase == "warmup" else {}
        self.write(jsonl.record(snap, "interval", self.context, **phase))
        self.progress.interval(snap, self.phase)

    def event(self, ev) -> None:
        self.record(events.as_dict(ev))
        self.progress.event()

    def summary(self, total) -> None:
        self.write(jsonl.record(total, "summary", self.context))


def run(path: str, out: str | None = None, backend: str | None = None, console_out=None) -> int:
    sc = schema.load(path)
    require_root()
    from ovslat.output.progress import RunProgress, print_run_result

    run_dir = _run_dir(out, sc)
    shutil.copyfile(sc.path, run_dir / rundir.SCENARIO_COPY)
    env = {**os.environ, "OVSLAT_RUN_DIR": str(run_dir.resolve())}
    interrupted = False
    with (
        open(run_dir / rundir.MEASUREMENTS, "w") as jsonl,
        open(run_dir / "workload.log", "w") as log,
        Stop() as signals,
        contextlib.ExitStack() as stack,
    ):
        stop = signals.event
        hosts, db = _prepare(sc, stack, log, env)
        session = stack.enter_context(Session(_options(sc, db, backend)))
        progress = stack.enter_context(RunProgress(sc.name, sc.warmup_s, sc.duration_s))
        rec = _Recorder(jsonl, session.context, progress)
        rec.record(
            {
                "type": "run",
                "scenario": sc.name,
                "description": sc.description,
                "file": str(sc.path),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "warmup_s": sc.warmup_s,
                "ovslat_run_dir": str(run_dir),
                # topology host -> its namespace: checks name a pod's eth0 as eth0@HOST
                "hosts": hosts,
            }
        )
        rec.start(session.start_snapshot())
        if sc.threshold:
            start_threshold(session, rec.event)
        workload = _Steps(sc, hosts, log, env)

        def drive():
            # With duration_s the run lasts that long, background steps too;
            # without, it ends with the workload's last foreground step.
            workload.run(sc.workload, hold_background=sc.duration_s is not None)
            if sc.duration_s is None and not workload.abort.is_set():
                workload.abort.wait(DRAIN_S)
                stop.set()

        worker = threading.Thread(target=drive, name="workload", daemon=True)
        worker.start()
        if sc.warmup_s:
            rec.phase = "warmup"
            stop.wait(sc.warmup_s)
            rec.interval(session.read())
            rec.phase = "measure"
        total = loop(session, rec, stop)
        interrupted = signals.caught
        workload.abort.set()
        worker.join()
        rec.summary(total)
        rec.record({"type": "workload", "steps": workload.results})
    saved = rundir.load(run_dir)
    ok, outcomes = rundir.render(saved, sc.checks)
    print_run_result(saved, outcomes, ok, str(sc.path), console_out)
    if interrupted:
        print("ovslat: interrupted: the run was cut short", file=sys.stderr)
    return 0 if ok and not interrupted else EXIT_FAILED


# ---- check ------------------------------------------------------------------------


def check(path: str, backend: str | None = None, out=None) -> int:
    out = out or sys.stdout
    sc = schema.load(path)
    steps = len(sc.workload)
    print(
        f"{sc.path}: valid (version {schema.VERSION}; {steps} workload step(s), "
        f"{len(sc.checks)} assertion(s))",
        file=out,
        flush=True,
    )
    require_root()
    with open(os.devnull, "w") as log, contextlib.ExitStack() as stack:
        hosts, db = _prepare(sc, stack, log, dict(os.environ))
        if sc.topology:
            print(f"topology built: bridge {sc.topology.bridge}, {len(hosts)} host(s)", file=out)
        with Session(_options(sc, db, backend)) as session:
            print(f"attached: {session.describe()}; detached", file=out)
    print("check passed: the scenario can run here", file=out, flush=True)
    return 0
