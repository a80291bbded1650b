"""Compiles bpf/ovslat.bpf.c once, attaches it with the best backend the
kernel allows, and reads its maps. The only module that imports bcc."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from bcc import BPF
from bcc.libbcc import lib as libbcc

from ovslat import abi
from ovslat.abi import BACKENDS, NDBG, NMAX, NPOINTS, ConfigFlag, IfaceFlag
from ovslat.data import data_dir
from ovslat.discovery.topology import IANA_TUNNEL_PORTS
from ovslat.engine import headers, nflink, tpbtf
from ovslat.engine.btf import BtfError
from ovslat.engine.kernel import (
    HOOKS,
    IPV6_HOOK,
    IPV6_LIST_HOOK,
    LIST_HOOK,
    KernelInfo,
    gro_normal_batch,
    kprobes_supported,
    online_cpus,
    rx_ring,
)
from ovslat.errors import UserError
from ovslat.model.histogram import NBUCKETS, Histogram
from ovslat.model.snapshot import STAGES, Counters, Interface

BPF_DIR = data_dir("bpf")
SOURCE = BPF_DIR / "ovslat.bpf.c"
_KPROBE_FN = dict(zip(HOOKS, ("kprobe_enqueue", "kprobe_receive", "kprobe_ip"), strict=True))

# What S3 means under each backend; shown by README and the reports.
S3_MEANING = {
    "fentry": "IPv4: ip_rcv() entry (fentry), ip_list_rcv() for a GRO list; "
    "IPv6: ipv6_rcv(), ipv6_list_rcv()",
    "kprobe": "IPv4: ip_rcv() entry (kprobe), ip_list_rcv() for a GRO list; "
    "IPv6: ipv6_rcv(), ipv6_list_rcv()",
    "tracepoint": "IPv4: PRE_ROUTING netfilter hook inside ip_rcv()/ip_list_rcv(); "
    "IPv6: PRE_ROUTING inside ipv6_rcv()/ipv6_list_rcv() (BPF netfilter links)",
}
# What S1 means: kprobe and fentry hook enqueue_to_backlog() itself; the
# tracepoint backend has no tracepoint there on a NIC's GRO path.
S1_MEANING = {
    "fentry": "enqueue_to_backlog() entry (fentry)",
    "kprobe": "enqueue_to_backlog() entry (kprobe)",
    "tracepoint": "netif_rx (enqueue_to_backlog follows), netif_receive_skb entry (RPS); "
    "on a NAPI device napi_gro_receive entry, before GRO and RPS's enqueue",
}
# The tracepoint backend's S1 on a NAPI device (a NIC, a veth running XDP):
# (tracepoint, function in bpf/). They need napi_poll's program, which ends
# the poll they start.
NAPI_HOOKS = (
    ("napi_gro_receive_exit", "napi_gro_exit"),  # exits first: see RECEIVE_HOOKS
    ("napi_gro_receive_entry", "napi_gro_entry"),
    ("netif_receive_skb_list_entry", "napi_list_entry"),
)
# The tracepoints every backend attaches (which receives are synchronous,
# and the core receive), then the tracepoint backend's S1 of a backlog:
# (tracepoint, function in bpf/), attached in this order. An exit before its
# entry: an entry whose exit went unseen while the other was being attached
# would leave bpf/'s stack of calls in progress one deeper for good.
RECEIVE_HOOKS = (
    ("netif_receive_skb_exit", "tp_receive_exit"),
    ("netif_receive_skb_entry", "tp_receive_entry"),
    ("netif_receive_skb", "tp_receive"),
)
TRACEPOINT_S1 = (("netif_rx", "tp_netif_rx"),)
# OVSLAT_TP_BTF=0: the tracepoint backend loads its programs as plain raw
# tracepoints (probe reads), as it does by itself where tp_btf is refused.
TP_BTF_ENV = "OVSLAT_TP_BTF"


# Optional raw tracepoints: (tracepoint, function in bpf/, what is lost without).
OPTIONAL = (
    ("napi_poll", "learn_napi_poll", "queue depth not sampled"),
    ("kfree_skb", "drop_kfree_skb", "drops not attributed (counted as in flight, then expired)"),
)
# The IANA ports of the tunnels whose inner packets are parsed; a bridge's
# tunnels add theirs (options:dst_port) through set_tunnel_ports().
DEFAULT_TUNNEL_PORTS = IANA_TUNNEL_PORTS
NO_REASON = "NO_REASON"  # the reason of a drop on a kernel that gives none


# Functions a stack starts at (the hooks and the tracepoints' callers): the
# frames above them are the BPF program and its trampoline, which bcc often
# cannot even symbolize.
_HOOK_FRAMES = (
    "enqueue_to_backlog",
    "__netif_receive_skb",
    "ip_rcv",
    "netif_rx_internal",
    "netif_receive_skb",
    "__netif_receive_skb_core",
)


def _from_hook(frames: list[str]) -> list[str]:
    for i, frame in enumerate(frames[:8]):
        if frame.split("+")[0].split(".")[0] in _HOOK_FRAMES:
            return frames[i:]
    return frames


_COUNTER_WORDS = {name: abi.word_index(abi.Counters, name) for name in abi.COUNTER_FIELDS}
# struct counters keeps debug[point][counter] flattened: bcc mirrors 1-D arrays only.
_DEBUG_WORD = abi.word_index(abi.Counters, "debug")
_SUM_NS_WORD = abi.word_index(abi.Hist, "sum_ns")


def _sum_cpus(per_cpu) -> Histogram:
    """One struct hist per CPU -> their sum (max is kept per interval elsewhere)."""
    words = abi.cpu_sums(per_cpu, abi.Hist)
    return Histogram(tuple(words[:NBUCKETS]), words[_SUM_NS_WORD], 0)


# A packet waits in a backlog for microseconds to milliseconds; a record
# this old belongs to a packet the kernel dropped without telling.
FLOW_EXPIRY_S = 5.0


class BackendUnavailable(Exception):
    pass


@dataclass(frozen=True)
class EngineOptions:
    backend: str = "auto"
    max_ifaces: int = 64
    max_flows: int = 10240
    debug: bool = False
    max_hops: int = 256  # (from, to, kind) histograms; hops are found in traffic


@contextlib.contextmanager
def _captured_stderr():
    """bcc and libbpf print straight to fd 2; keep that for the error message
    instead of spraying it over the user's terminal."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        box = {"text": ""}
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


_TREE: headers.HeaderTree | None = None


def header_tree() -> headers.HeaderTree:
    """The header tree bcc compiles against (found once per process), with
    the environment bcc reads set for it: nothing is written to disk."""
    global _TREE
    if _TREE is None:
        try:
            tree = headers.find()
        except headers.NoHeaders as e:
            raise UserError(str(e)) from e
        os.environ.update(tree.env())
        _TREE = tree
    return _TREE


def cflags(kernel: KernelInfo, backend: str, o: EngineOptions, tp_btf: bool = False) -> list[str]:
    flags = header_tree().cflags(headers.bcc_arch(os.uname().machine)) + [
        f"-I{BPF_DIR}",
        f"-DBACKEND_{backend.upper()}",
        f"-DMAX_IFACES={o.max_ifaces}",
        f"-DMAX_FLOWS={o.max_flows}",
        f"-DMAX_HOPS={o.max_hops}",
        f"-DOVSLAT_NR_CPUS={kernel.ncpus}",
    ]
    flags += [f"-D{k}={v}" for k, v in kernel.offsets.items()]
    flags.append(f"-DRX_RING={rx_ring(gro_normal_batch())}")
    if has_list_hook(kernel, backend):
        flags.append("-DHAVE_IP_LIST_RCV")
    for hook, define, _ in _IPV6_HOOKS:
        if has_list_hook(kernel, backend, hook):
            flags.append(f"-D{define}")
    gro = kernel.btf.enum_names("gro_result")
    by_name = {v: k for k, v in gro.items()}
    for result in ("GRO_MERGED", "GRO_MERGED_FREE", "GRO_CONSUMED"):
        # never matched when the kernel does not say: such records expire
        flags.append(f"-DOVSLAT_{result}={by_name.get(result, -1)}")
    if (kernel.btf.tracepoint_args("kfree_skb") or 0) >= 3:
        flags.append("-DKFREE_SKB_REASON")
    if o.debug:
        flags.append("-DOVSLAT_DEBUG")
    if tp_btf:
        flags.append("-DTP_BTF")
    return flags


def tp_btf_wanted(kernel: KernelInfo) -> bool:
    """Load the tracepoint backend's programs as tp_btf: the kernel's BTF
    describes its tracepoints (Linux >= 5.5), unless OVSLAT_TP_BTF=0."""
    if os.environ.get(TP_BTF_ENV, "1") == "0":
        return False
    return all(kernel.btf.tracepoint_btf_id(tp) for tp, _ in RECEIVE_HOOKS + TRACEPOINT_S1)


def has_list_hook(kernel: KernelInfo, backend: str, hook: str = LIST_HOOK) -> bool:
    """`hook` (ip_list_rcv(), or one of IPv6's) can be hooked: a kernel
    symbol (kprobe), a BTF function under its own name (fentry)."""
    if backend == "kprobe":
        return hook in kernel.kallsyms
    if backend == "fentry":
        return hook in kernel.kallsyms and kernel.btf.has_func(hook)
    return False


# IPv6's S3 under kprobe/fentry: (hook, -D flag, kprobe function)
_IPV6_HOOKS = (
    (IPV6_HOOK, "HAVE_IPV6_RCV", "kprobe_ipv6"),
    (IPV6_LIST_HOOK, "HAVE_IPV6_LIST_RCV", "kprobe_ipv6_list"),
)


class Program:
    """The loaded, attached BPF program of one backend."""

    def __init__(self, kernel: KernelInfo, backend: str, opts: EngineOptions):
        self.kernel = kernel
        self.backend = backend
        self.opts = opts
        self.notes: list[str] = []
        self.s3: str | None = S3_MEANING[backend]
        self.s1: str = S1_MEANING[backend]
        self.napi = backend != "tracepoint"  # a NAPI device's receive is seen
        self._learning = False  # napi_poll attached, learning softnet_data
        self._drop_reasons = (kernel.btf.tracepoint_args("kfree_skb") or 0) >= 3
        # netns inode -> its netfilter link fds (IPv4's, IPv6's)
        self._links: dict[int, list[int]] = {}
        self._nf_fns: list[tuple[int, Any]] = []  # (NFPROTO_*, loaded program)
        self._epoch = 0
        # tracepoint backend: its programs loaded as tp_btf (typed field loads)
        self.tp_btf = backend == "tracepoint" and tp_btf_wanted(kernel)
        self._tp_progs: dict[str, int] = {}  # tp_btf: function -> program fd
        self._tp_links: dict[str, int] = {}  # tp_btf: tracepoint -> link fd
        self.bpf = self._compile_and_attach()
        self._ifaces = self.bpf["ifaces"]
        self._counters = self.bpf["counters"]
        self._hists = self.bpf["hists"]
        self._maxima = self.bpf["maxima"]
        self._batch = True  # BPF_MAP_LOOKUP_BATCH works on arrays (5.6+)
        self._config_values: dict[str, int] = {}
        self._hops = False
        self._threshold = False
        self._tunnel_ports: dict[int, str] = dict(DEFAULT_TUNNEL_PORTS)
        self.events_lost = 0  # slow-packet events lost to a full perf buffer
        self.flow_expiry_s = FLOW_EXPIRY_S
        self._write_config()
        self.prime_backlogs()

    # ---- loading -------------------------------------------------------
    def _compile_and_attach(self) -> BPF:
        header_tree()  # no tree is the user's to fix, not a backend's failure
        symbols = self.kernel.hook_symbols()
        if self.backend == "fentry":
            missing = [h for h in HOOKS if not self.kernel.btf.has_func(h) or symbols[h] != h]
            if missing:
                raise BackendUnavailable(
                    f"no BTF function for {', '.join(missing)} (inlined or renamed by GCC)"
                )
            if not BPF.support_kfunc():
                raise BackendUnavailable("kernel has no BPF trampoline support")
        if self.backend == "kprobe":
            if not kprobes_supported():
                raise BackendUnavailable("kernel built without CONFIG_KPROBES")
            missing = [h for h in HOOKS if not symbols[h]]
            if missing:
                raise BackendUnavailable(f"no kernel symbol for {', '.join(missing)}")
        b = None
        failure = None
        with _captured_stderr() as err:
            try:
                # fentry programs attach as they load
                b = self._compile()
                hooks = RECEIVE_HOOKS + (TRACEPOINT_S1 if self.backend == "tracepoint" else ())
                for tp, fn in hooks:
                    self._attach_tp(b, tp, fn)
                if self.backend == "kprobe":
                    for hook, fn in _KPROBE_FN.items():
                        symbol = symbols[hook]
                        assert symbol is not None  # `missing` above rejected unresolved hooks
                        b.attach_kprobe(event=symbol.encode(), fn_name=fn.encode())
                    if has_list_hook(self.kernel, "kprobe"):
                        b.attach_kprobe(event=LIST_HOOK.encode(), fn_name=b"kprobe_ip_list")
                    for hook, _, fn in _IPV6_HOOKS:
                        if has_list_hook(self.kernel, "kprobe", hook):
                            b.attach_kprobe(event=hook.encode(), fn_name=fn.encode())
            except Exception as e:  # bcc raises bare Exception for load/attach failures
                failure = str(e).strip()
                if b is not None:
                    self._close_tp()
                    b.cleanup()
        if failure is not None:
            detail = _last_line(err["text"])
            if (
                self.backend == "fentry"
                and "Operation not permitted" in detail
                and os.geteuid() == 0
            ):
                # bcc says "Need super-user privileges" for any EPERM; as root it is the kernel
                raise BackendUnavailable(
                    "the kernel refuses to attach fentry programs (EPERM as root: BPF "
                    "trampolines disabled or locked down)"
                )
            raise BackendUnavailable(failure + (f" ({detail})" if detail else ""))
        if self.backend != "tracepoint" and not has_list_hook(self.kernel, self.backend):
            self.notes.append(
                f"S2 -> S3 of GRO lists (a NIC without RPS) not measured: no {LIST_HOOK}() "
                f"to hook with {self.backend}"
            )
        if self.backend != "tracepoint":
            for hook, _, _ in _IPV6_HOOKS:
                if not has_list_hook(self.kernel, self.backend, hook):
                    self.notes.append(
                        f"IPv6 S3 not measured{' for GRO lists' if 'list' in hook else ''}: "
                        f"no {hook}() to hook with {self.backend} (a kernel without IPv6)"
                    )
        self._attach_optional(b)
        if self.backend == "tracepoint":
            self._attach_napi(b)
            self._load_netfilter(b)
        return b

    def _compile(self) -> BPF:
        """bcc's compile (and fentry's load); as tp_btf, every tracepoint
        program also through the verifier, or, refused, compiled again for
        raw tracepoints with a note."""
        b = BPF(
            src_file=str(SOURCE).encode(),
            cflags=cflags(self.kernel, self.backend, self.opts, self.tp_btf),
        )
        if not self.tp_btf:
            return b
        try:
            for tp, fn in self._tracepoint_programs():
                self._tp_progs[fn] = self._load_tp_btf(b, tp, fn)
            return b
        except OSError as e:
            self._close_tp()
            b.cleanup()
            self.tp_btf = False
            self.notes.append(
                "tracepoint programs run as raw tracepoints (a probe read per field): "
                f"the kernel refused them as tp_btf ({e.strerror})"
            )
        return BPF(
            src_file=str(SOURCE).encode(), cflags=cflags(self.kernel, self.backend, self.opts)
        )

    def _tracepoint_programs(self) -> list[tuple[str, str]]:
        """(tracepoint, function) of every program the tracepoint backend
        may attach that this kernel has the tracepoint for."""
        every = (
            RECEIVE_HOOKS + TRACEPOINT_S1 + tuple((tp, fn) for tp, fn, _ in OPTIONAL) + NAPI_HOOKS
        )
        return [(tp, fn) for tp, fn in every if self.kernel.btf.tracepoint_args(tp) is not None]

    def _load_tp_btf(self, b: BPF, tp: str, fn: str) -> int:
        name = fn.encode()
        insns = ctypes.string_at(libbcc.bpf_function_start(b.module, name),
                                 libbcc.bpf_function_size(b.module, name))  # fmt: skip
        btf_id = self.kernel.btf.tracepoint_btf_id(tp)
        assert btf_id is not None  # _tracepoint_programs() keeps the kernel's tracepoints only
        try:
            return tpbtf.load(insns, fn, btf_id, libbcc.bpf_module_license(b.module))
        except OSError as e:
            raise OSError(e.errno, f"{fn}: {e.strerror}") from None

    def _attach_tp(self, b: BPF, tp: str, fn: str) -> None:
        if not self.tp_btf:
            b.attach_raw_tracepoint(tp=tp.encode(), fn_name=fn.encode())
            return
        prog = self._tp_progs.get(fn)
        if prog is None:
            prog = self._tp_progs[fn] = self._load_tp_btf(b, tp, fn)
        self._tp_links[tp] = tpbtf.attach(prog)

    def _detach_tp(self, b: BPF, tp: str) -> None:
        link = self._tp_links.pop(tp, None)
        if link is not None:
            os.close(link)
        elif tp.encode() in b.raw_tracepoint_fds:
            b.detach_raw_tracepoint(tp=tp.encode())

    def _tracepoints(self, b: BPF) -> set[str]:
        return {tp.decode() for tp in b.raw_tracepoint_fds} | set(self._tp_links)

    def _close_tp(self) -> None:
        for fd in [*self._tp_links.values(), *self._tp_progs.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._tp_links.clear()
        self._tp_progs.clear()

    def _attach_napi(self, b: BPF) -> None:
        """The tracepoint backend's S1 on NAPI devices. Without them (or
        without napi_poll, which ends what they begin) a NIC's packets are
        still received at S2, as flow lookup failures."""
        why = None
        if not self._learning:
            why = "the napi_poll program is not attached"
        else:
            missing = [tp for tp, _ in NAPI_HOOKS if self.kernel.btf.tracepoint_args(tp) is None]
            if missing:
                why = f"the kernel has no {', '.join(missing)} tracepoint"
        attached = []
        if why is None:
            with _captured_stderr() as err:
                try:
                    for tp, fn in NAPI_HOOKS:
                        self._attach_tp(b, tp, fn)
                        attached.append(tp)
                except Exception as e:  # bcc raises bare Exception
                    why = f"the kernel refused a NAPI program ({_last_line(err['text']) or e})"
        if why is None:
            self.napi = True
            return
        for tp in attached:
            self._detach_tp(b, tp)
        self.s1 = S1_MEANING["tracepoint"].split("; on a NAPI")[0]
        self.notes.append(
            f"NIC (NAPI) receives have no S1 and count as flow lookup failures: {why}"
        )

    def _attach_optional(self, b: BPF) -> None:
        """The parts ovslat measures without: each a kernel lacks or refuses
        is left out with a note, never taking the whole program down."""
        for tp, fn, lost in OPTIONAL:
            if self.kernel.btf.tracepoint_args(tp) is None:
                self.notes.append(f"{lost}: the kernel has no {tp} tracepoint")
                continue
            with _captured_stderr() as err:
                try:
                    self._attach_tp(b, tp, fn)
                    ok = True
                except Exception as e:  # bcc raises bare Exception
                    ok, why = False, (_last_line(err["text"]) or str(e).strip())
            if not ok:
                self.notes.append(f"{lost}: the kernel refused the {tp} program ({why})")
            elif tp == "napi_poll":
                self._learning = True
        if "kfree_skb" in self._tracepoints(b) and not self._drop_reasons:
            self.notes.append(
                "drop reasons unavailable: kfree_skb passes none below Linux 5.17 "
                f"(drops are counted, as reason {NO_REASON})"
            )

    @property
    def attached(self) -> set[str]:
        return self._tracepoints(self.bpf) if self.bpf else set()

    def _load_netfilter(self, b: BPF) -> None:
        try:
            prog_type = self.kernel.btf.enum_value("bpf_prog_type", "BPF_PROG_TYPE_NETFILTER")
            self._nf_attach_type = self.kernel.btf.enum_value("bpf_attach_type", "BPF_NETFILTER")
        except BtfError:
            self.s3 = None
            self.notes.append("S3 unavailable: kernel < 6.4 has no BPF netfilter hook")
            return
        with _captured_stderr():
            try:
                for pf, fn in (
                    (nflink.NFPROTO_IPV4, b"netfilter_ip_rcv"),
                    (nflink.NFPROTO_IPV6, b"netfilter_ipv6_rcv"),
                ):
                    loaded = b.load_func(fn, prog_type, attach_type=self._nf_attach_type)
                    self._nf_fns.append((pf, loaded))
            except Exception as e:
                self.s3 = None
                self._nf_fns = []
                self.notes.append(f"S3 unavailable: netfilter program did not load ({e})")

    # ---- run-time settings --------------------------------------------
    def _write_config(self) -> None:
        t = self.bpf["config"]
        cfg = t.Leaf()
        for name, value in self._config_values.items():
            setattr(cfg, name, value)
        if self._hops:
            cfg.flags |= ConfigFlag.HOPS
        if self._threshold:
            cfg.flags |= ConfigFlag.THRESHOLD
        cfg.epoch = self._epoch
        for i, (port, kind) in enumerate(sorted(self._tunnel_ports.items())):
            cfg.tunnel_port[i] = port
            cfg.tunnel_type[i] = abi.TunnelType[kind.upper()]
        cfg.backlog_poll_fn = self.kernel.kallsyms.get("process_backlog", 0)
        t[t.Key(0)] = cfg

    def set_filters(
        self, values: dict[str, int], nets: dict[str, list[tuple[int, int, bytes]]] | None = None
    ) -> None:
        """struct config's filter fields, and the address tries' networks:
        map name -> [(family, prefix length, address bytes)]."""
        for name, entries in (nets or {}).items():
            t = self.bpf[name]
            t.clear()
            for family, plen, addr in entries:
                k = t.Key()
                k.prefixlen, k.family = 32 + plen, family
                ctypes.memmove(ctypes.addressof(k.addr), addr, 16)
                t[k] = ctypes.c_uint8(1)
        self._config_values = dict(values)
        self._write_config()

    def set_threshold(
        self,
        threshold_ns: int,
        events_per_s: int,
        on_event,
        stages: tuple[str, ...] = ("enqueue_to_receive",),
    ) -> None:
        """Slow-packet events: `stages` (S1 -> S2, the transit between two
        interfaces, S2 -> S3) above threshold_ns, at most events_per_s (split
        over the CPUs), each handed to on_event(raw_event, stack)."""
        per_cpu = max(1, -(-events_per_s // self.kernel.ncpus))
        if "receive_to_ip" in stages and self.backend == "tracepoint":
            # S3 is a netfilter program there, which can neither read the
            # packet's headers nor send an event
            self.notes.append(
                "no S2 -> S3 slow-packet events with the tracepoint backend (they need "
                "kprobe or fentry)"
            )
        self._config_values.update(
            threshold_ns=threshold_ns,
            events_per_cpu_s=per_cpu,
            threshold_stages=sum(1 << abi.THRESHOLD_STAGES.index(s) for s in stages),
        )
        self._threshold = True
        self._write_config()
        stacks = self.bpf["stacks"]
        table = self.bpf["events"]

        def handle(_cpu, data, _size):
            ev = ctypes.cast(data, ctypes.POINTER(abi.SlowEvent)).contents
            frames = []
            if ev.stack_id >= 0:
                frames = [
                    BPF.ksym(a, show_module=True, show_offset=True).decode(errors="replace")
                    for a in stacks.walk(ev.stack_id)
                ]
                frames = _from_hook(frames)
            on_event(ev, frames)

        def lost(n):
            self.events_lost += n

        table.open_perf_buffer(handle, page_cnt=64, lost_cb=lost)

    def poll_events(self) -> None:
        self.bpf.perf_buffer_poll(timeout=0)

    def read_drops(self) -> dict[int, dict[str, int]]:
        """slot -> {kernel drop reason: count}, cumulative."""
        names = self.kernel.btf.enum_names("skb_drop_reason")
        out: dict[int, dict[str, int]] = {}
        for k, per_cpu in self.bpf["drops"].items():
            if not self._drop_reasons:
                reason = NO_REASON
            else:
                reason = names.get(k.reason, str(k.reason)).removeprefix("SKB_DROP_REASON_")
            out.setdefault(k.slot, {})[reason] = sum(per_cpu)
        return out

    def set_tunnel_ports(self, ports: dict[int, str]) -> None:
        """UDP port -> tunnel type ("vxlan", "geneve") whose packets are
        measured by their inner packet, on top of the IANA ports; a port
        that does not fit is told in the notes once."""
        merged = {**DEFAULT_TUNNEL_PORTS, **ports}
        if len(merged) > abi.MAX_TUNNEL_PORTS:
            kept = dict(sorted(merged.items())[: abi.MAX_TUNNEL_PORTS])
            note = (
                f"only {abi.MAX_TUNNEL_PORTS} tunnel UDP ports are parsed; "
                f"{', '.join(str(p) for p in sorted(set(merged) - set(kept)))} measured as "
                "outer datagrams"
            )
            if note not in self.notes:
                self.notes.append(note)
            merged = kept
        if merged != self._tunnel_ports:
            self._tunnel_ports = merged
            self._write_config()

    def set_hops(self, enabled: bool) -> None:
        """Correlate packets across interfaces: worth its cost from two on."""
        if enabled != self._hops:
            self._hops = enabled
            self._write_config()

    def add_interface(self, iface: Interface) -> None:
        if iface.slot >= self.opts.max_ifaces:
            raise UserError(
                f"too many interfaces: {iface.slot + 1} > --max-ifaces {self.opts.max_ifaces}"
            )
        self._clear_slot(iface.slot)
        k = self._ifaces.Key(iface.netns_inode, iface.ifindex)
        flags = IfaceFlag.NO_RPS if iface.rps is False else 0
        self._ifaces[k] = self._ifaces.Leaf(iface.slot, flags)
        if self._nf_fns and iface.netns_inode not in self._links:
            links = self._links[iface.netns_inode] = []
            for pf, fn in self._nf_fns:
                try:
                    links.append(nflink.link_create(fn.fd, self._nf_attach_type, iface.ns_path, pf))
                except OSError as e:
                    family = "IPv6 " if pf == nflink.NFPROTO_IPV6 else ""
                    self.notes.append(
                        f"{family}S3 unavailable in {iface.netns or 'this netns'}: {e}"
                    )

    def remove_interface(self, iface: Interface) -> None:
        with contextlib.suppress(KeyError):
            del self._ifaces[self._ifaces.Key(iface.netns_inode, iface.ifindex)]

    def _clear_slot(self, slot: int) -> None:
        self._counters.clearitem(self._counters.Key(slot))
        for stage in range(len(STAGES)):
            self._hists.clearitem(self._hists.Key(slot * len(STAGES) + stage))
        for half in range(2):
            self._maxima.clearitem(self._maxima.Key(half * self.opts.max_ifaces + slot))
        self.bpf["hop_sources"].clearitem(self.bpf["hop_sources"].Key(slot))
        self.bpf["hop_unconfirmed"].clearitem(self.bpf["hop_unconfirmed"].Key(slot))

    # ---- reading --------------------------------------------------------
    def _read_range(self, table, first: int, count: int) -> list[bytes]:
        """The per-CPU values of array keys first .. first+count-1, one bytes
        object per key: in one BPF_MAP_LOOKUP_BATCH (at 4096 interfaces one
        syscall instead of 4096), key by key where the kernel cannot batch
        this map (EINVAL, ENOTSUPP: not tried again)."""
        if count <= 0:
            return []
        if self._batch:
            keys = (table.Key * count)()
            values = (table.Leaf * count)()
            n = ctypes.c_uint32(count)
            token = ctypes.c_uint32(0)
            # in_batch is the key before the first one wanted (NULL: from the start)
            prev = ctypes.c_uint32(first - 1)
            rc = libbcc.bpf_lookup_batch(
                table.map_fd,
                ctypes.byref(prev) if first else None,
                ctypes.byref(token),
                ctypes.addressof(keys),
                ctypes.addressof(values),
                ctypes.byref(n),
            )
            err = ctypes.get_errno()
            if rc != 0 and err in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, 524):  # ENOTSUPP
                self._batch = False
            elif rc != 0 and err != errno.ENOENT:
                raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
            elif n.value == count:
                size = ctypes.sizeof(table.Leaf)
                raw = bytes(values)
                return [raw[i * size : (i + 1) * size] for i in range(count)]
        return [bytes(table.getvalue(table.Key(first + i))) for i in range(count)]

    def read_counter_bytes(self, slots: int) -> list[bytes]:
        """Every slot's per-CPU counters, unparsed (what changed is a bytes
        comparison away); slot i at index i, for slots 0 .. slots-1."""
        return self._read_range(self._counters, 0, slots)

    def parse_counters(self, raw: bytes) -> tuple[Counters, tuple[tuple[int, ...], ...]]:
        words = abi.cpu_sums(raw, abi.Counters)
        vals = {name: words[w] for name, w in _COUNTER_WORDS.items()}
        debug: tuple[tuple[int, ...], ...] = ()
        if self.opts.debug:
            debug = tuple(
                tuple(words[_DEBUG_WORD + p * NDBG + i] for i in range(NDBG))
                for p in range(NPOINTS)
            )
        return Counters(**vals), debug

    def read_probe_entries(self) -> tuple[int, ...]:
        if not self.opts.debug:
            return ()
        per_cpu = self._counters.getvalue(self._counters.Key(self.opts.max_ifaces))
        words = abi.cpu_sums(per_cpu, abi.Counters)
        return tuple(words[_DEBUG_WORD + p * NDBG] for p in range(NPOINTS))

    def read_hist(self, slot: int, stage: int) -> Histogram:
        return _sum_cpus(self._hists.getvalue(self._hists.Key(slot * len(STAGES) + stage)))

    def read_hops(self) -> dict[tuple[int, int, int, int], Histogram]:
        """(from slot, to slot, kind, tunnel word) -> cumulative histogram."""
        return {
            (getattr(k, "from"), k.to, k.kind, k.tunnel): _sum_cpus(per_cpu)
            for k, per_cpu in self.bpf["hop_hists"].items()
        }

    def flip_epoch(self, slots: list[int]) -> tuple[dict, dict]:
        """Start a new interval for the maxima; return the last one's: per slot
        (NMAX values; slots whose maxima are all 0 left out) and per
        (from, to, kind, tunnel) hop. Only the slots that saw a packet are cleared."""
        old = self._epoch & 1
        self._epoch += 1
        self._write_config()
        base = old * self.opts.max_ifaces
        n = max(slots, default=-1) + 1
        raw = self._read_range(self._maxima, base, n)
        wanted = set(slots)
        zero = bytes(ctypes.sizeof(self._maxima.Leaf))
        out = {}
        for slot, value in enumerate(raw):
            if value == zero or slot not in wanted:
                continue
            per_cpu = memoryview(value).cast("Q")
            out[slot] = tuple(max(per_cpu[i::NMAX]) for i in range(NMAX))
            self._maxima.clearitem(self._maxima.Key(base + slot))
        hops = {}
        table = self.bpf["hop_maxima"]
        for k, per_cpu in list(table.items()):
            if k.half == old:
                hops[(getattr(k, "from"), k.to, k.kind, k.tunnel)] = max(per_cpu)
                with contextlib.suppress(KeyError):
                    del table[k]
        return out, hops

    def probe_cost_by_program(self) -> dict[str, tuple[int, int]]:
        """name -> (run_time_ns, run_cnt) from fdinfo; both stay 0 unless
        sysctl kernel.bpf_stats_enabled=1."""
        out = {}
        for name, fn in self.bpf.funcs.items():
            ns = cnt = 0
            try:
                with open(f"/proc/self/fdinfo/{fn.fd}") as f:
                    for line in f:
                        key, _, val = line.partition(":")
                        if key == "run_time_ns":
                            ns = int(val)
                        elif key == "run_cnt":
                            cnt = int(val)
            except OSError:
                continue
            out[name.decode()] = (ns, cnt)
        return out

    def probe_cost(self) -> tuple[int, int]:
        """(run_time_ns, run_cnt) summed over all of this program's functions."""
        costs = self.probe_cost_by_program().values()
        return sum(ns for ns, _ in costs), sum(cnt for _, cnt in costs)

    def expire_flows(self, older_than_s: float | None = None) -> int:
        """Delete S1 records older than older_than_s (their S2 never came: the
        kernel lost the packet without a kfree_skb); returns how many."""
        flows = self.bpf["flows"]
        age_s = self.flow_expiry_s if older_than_s is None else older_than_s
        cutoff = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - int(age_s * 1e9)
        stale = [k for k, f in flows.items() if f.ts_enqueue_ns < cutoff]
        for k in stale:
            with contextlib.suppress(KeyError):
                del flows[k]
        return len(stale)

    def prime_backlogs(self) -> None:
        """Make every online CPU poll its backlog once, so the learner knows
        them all and can be detached: one datagram to the loopback discard
        port from a thread pinned to each CPU (loopback transmits through
        netif_rx into the sending CPU's backlog)."""
        saved = os.sched_getaffinity(0)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for cpu in sorted(online_cpus() & saved):
                    os.sched_setaffinity(0, {cpu})
                    s.sendto(b"ovslat", ("127.0.0.1", 9))
        except OSError:
            pass  # no loopback here: the learner keeps learning from real traffic
        finally:
            os.sched_setaffinity(0, saved)
        deadline = time.monotonic() + 0.2
        while not self.stop_learning_backlogs() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop_learning_backlogs(self) -> bool:
        """Once every online CPU's softnet_data is known, detach the napi_poll
        learner: it runs at every NAPI poll of the machine (~30 ns each) and
        has nothing left to learn. True once detached."""
        if self._learning:
            if self.backend == "tracepoint" and self.napi:
                return True  # also ends each NAPI poll's list receives: stays
            known = {cpu.value for cpu, sd in self.bpf["backlogs"].items() if sd.value}
            if online_cpus() <= known:
                self._detach_tp(self.bpf, "napi_poll")
                self._learning = False
        return not self._learning

    def close(self) -> None:
        for fd in (fd for fds in self._links.values() for fd in fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._links.clear()
        self._close_tp()
        if self.bpf is not None:
            if self._threshold:
                # close the perf readers while the map is still open; bcc's
                # finalizer would try later and raise on the closed map
                events = self.bpf["events"]
                for key in list(events._open_key_fds):
                    del events[key]
            self.bpf.cleanup()
            self.bpf = None


def bcc_version() -> str:
    import bcc

    return getattr(bcc, "__version__", "unknown version")


def open_program(kernel: KernelInfo, opts: EngineOptions) -> Program:
    """The requested backend, or with 'auto' the first that loads and
    attaches of fentry (cheapest), kprobe, tracepoint."""
    if opts.backend != "auto" and opts.backend not in BACKENDS:
        raise UserError(f"unknown backend {opts.backend!r}: use auto, {', '.join(BACKENDS)}")
    order = BACKENDS if opts.backend == "auto" else (opts.backend,)
    reasons = []
    for backend in order:
        try:
            return Program(kernel, backend, opts)
        except BackendUnavailable as e:
            reasons.append(f"{backend}: {e}")
    if opts.backend != "auto":
        raise UserError(
            f"--attach {opts.backend} is not usable on this kernel ({reasons[0]}); "
            "try --attach auto or run `ovslat doctor`"
        )
    raise UserError("no BPF attach backend works on this kernel: " + "; ".join(reasons))


def compile_only(kernel: KernelInfo, backend: str, opts: EngineOptions) -> list[str]:
    """Compile `backend`'s variant and load every program through the verifier
    without attaching; returns their names. Proves a backend's code on a
    kernel that cannot attach it (kprobes on a kernel without CONFIG_KPROBES)."""
    names = {"kprobe": list(_KPROBE_FN.values())}[backend]
    if has_list_hook(kernel, backend):
        names.append("kprobe_ip_list")
    names += [fn for hook, _, fn in _IPV6_HOOKS if has_list_hook(kernel, backend, hook)]
    with _captured_stderr():
        b = BPF(src_file=str(SOURCE).encode(), cflags=cflags(kernel, backend, opts))
        try:
            for n in names:
                b.load_func(n.encode(), BPF.KPROBE)
        finally:
            b.cleanup()
    return names
