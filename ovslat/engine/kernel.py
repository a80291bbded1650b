"""Facts about the running kernel that decide how ovslat attaches: which hook
symbols exist (and under which GCC clone name), struct offsets, CPU count.
Pure functions over /proc and /sys so they test without root."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ovslat.engine.btf import Btf, BtfError
from ovslat.errors import UserError

KALLSYMS = "/proc/kallsyms"

# Stage hook functions, as the seed names them.
HOOKS = ("enqueue_to_backlog", "__netif_receive_skb", "ip_rcv")
# S3 of a GRO list (a NIC without RPS), under kprobe and fentry; without it
# those packets' S2 -> S3 is not measured.
LIST_HOOK = "ip_list_rcv"
# IPv6's S3 under kprobe and fentry (IPv4's: ip_rcv, LIST_HOOK), each
# optional: a kernel without IPv6 has neither, and its S3 is IPv4's alone.
IPV6_HOOK, IPV6_LIST_HOOK = "ipv6_rcv", "ipv6_list_rcv"
GRO_BATCH = "/proc/sys/net/core/gro_normal_batch"
RX_RING_MAX = 64


def rx_ring(batch: int | None) -> int:
    """Per-CPU S2 -> S3 entries: a power of two holding one GRO list
    (net.core.gro_normal_batch packets, 8 by default), at most RX_RING_MAX."""
    want = max(8, batch or 8)
    ring = 8
    while ring < want and ring < RX_RING_MAX:
        ring *= 2
    return ring


def gro_normal_batch(path: str = GRO_BATCH) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None  # before Linux 5.4: lists were never batched


# struct offsets the BPF program needs, as (macro, struct, member path).
OFFSETS = (
    ("OFF_SKB_DEV", "sk_buff", "dev"),
    ("OFF_SKB_DATA", "sk_buff", "data"),
    ("OFF_SKB_PROTOCOL", "sk_buff", "protocol"),
    ("OFF_SKB_NEXT", "sk_buff", "next"),  # skb->list.next too: a GRO list's link
    ("OFF_SKB_END", "sk_buff", "end"),
    ("OFF_SKB_HEAD", "sk_buff", "head"),
    ("OFF_SKB_LEN", "sk_buff", "len"),  # with data_len: the linear area's length
    ("OFF_SKB_DATA_LEN", "sk_buff", "data_len"),
    ("OFF_SHINFO_GSO_SEGS", "skb_shared_info", "gso_segs"),
    ("OFF_DEV_IFINDEX", "net_device", "ifindex"),
    ("OFF_DEV_NET", "net_device", "nd_net"),
    ("OFF_NET_INUM", "net", "ns.inum"),
    ("OFF_SD_QLEN", "softnet_data", "input_pkt_queue.qlen"),
    ("OFF_SD_BACKLOG", "softnet_data", "backlog"),
    ("OFF_NAPI_POLL", "napi_struct", "poll"),
)


# Where RPS would steer a packet (the tracepoint backend's S1 at GRO entry
# tells a backlog receive from a GRO list's by it): optional, a kernel
# without CONFIG_RPS has none; such a NIC's packets are then list receives.
RPS_OFFSETS = (
    ("OFF_SKB_QUEUE_MAPPING", "sk_buff", "queue_mapping"),
    ("OFF_DEV_RX", "net_device", "_rx"),
    ("OFF_RXQ_RPS_MAP", "netdev_rx_queue", "rps_map"),
    ("OFF_RXQ_FLOW_TABLE", "netdev_rx_queue", "rps_flow_table"),
)


def struct_offsets(btf: Btf) -> dict[str, int]:
    try:
        out = {macro: btf.offsetof(struct, path) for macro, struct, path in OFFSETS}
    except BtfError as e:
        raise UserError(
            f"kernel BTF lacks a field ovslat needs ({e}); "
            "this kernel is not supported, please report it"
        ) from e
    try:
        rps = {macro: btf.offsetof(struct, path) for macro, struct, path in RPS_OFFSETS}
        rps["SIZEOF_RX_QUEUE"] = btf.sizeof("netdev_rx_queue")
    except BtfError:
        rps = {}
    return out | rps


def read_kallsyms(path: str = KALLSYMS) -> dict[str, int]:
    """Text symbols (name -> address). Data symbols are absent without
    CONFIG_KALLSYMS_ALL, which is why softnet_data is learnt in BPF instead."""
    syms: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1] in ("t", "T"):
                syms.setdefault(parts[2], int(parts[0], 16))
    return syms


_CLONE = re.compile(r"^(?P<base>[^.]+)(\.(constprop|isra|part|cold|localalias)\.\d+)+$")


def resolve_symbol(name: str, syms: dict[str, int]) -> str | None:
    """`name` itself, else a GCC clone of it (enqueue_to_backlog.constprop.0).
    A .cold part is never the function entry, so it is never chosen."""
    if name in syms:
        return name
    clones = sorted(
        s for s in syms if s.startswith(name + ".") and ".cold" not in s and _clone_of(s) == name
    )
    return clones[0] if clones else None


def _clone_of(sym: str) -> str | None:
    m = _CLONE.match(sym)
    return m.group("base") if m else None


def kprobes_supported() -> bool:
    """The kprobe PMU exists only with CONFIG_KPROBE_EVENTS."""
    return os.path.exists("/sys/bus/event_source/devices/kprobe/type")


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """Number of possible CPU ids ("0-3" -> 4), the size of per-CPU arrays."""
    with open(path) as f:
        text = f.read().strip()
    highest = 0
    for part in text.split(","):
        highest = max(highest, int(part.split("-")[-1]))
    return highest + 1


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> set[int]:
    """Online CPU ids ("0-3,6" -> {0, 1, 2, 3, 6})."""
    with open(path) as f:
        text = f.read().strip()
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


@dataclass(frozen=True)
class KernelInfo:
    release: str
    btf: Btf
    offsets: dict[str, int]
    kallsyms: dict[str, int]
    ncpus: int

    @classmethod
    def probe(cls) -> KernelInfo:
        try:
            btf = Btf.load()
        except BtfError as e:
            raise UserError(
                f"no kernel BTF ({e}): ovslat needs CONFIG_DEBUG_INFO_BTF=y "
                "(/sys/kernel/btf/vmlinux) to read struct layouts"
            ) from e
        try:
            syms = read_kallsyms()
        except OSError as e:
            raise UserError(f"cannot read {KALLSYMS}: {e.strerror}; run ovslat as root") from e
        return cls(os.uname().release, btf, struct_offsets(btf), syms, possible_cpus())

    def hook_symbols(self) -> dict[str, str | None]:
        return {h: resolve_symbol(h, self.kallsyms) for h in HOOKS}
