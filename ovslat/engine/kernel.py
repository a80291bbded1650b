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

# struct offsets the BPF program needs, as (macro, struct, member path).
OFFSETS = (
    ("OFF_SKB_DEV", "sk_buff", "dev"),
    ("OFF_SKB_DATA", "sk_buff", "data"),
    ("OFF_SKB_PROTOCOL", "sk_buff", "protocol"),
    ("OFF_DEV_IFINDEX", "net_device", "ifindex"),
    ("OFF_DEV_NET", "net_device", "nd_net"),
    ("OFF_NET_INUM", "net", "ns.inum"),
    ("OFF_SD_QLEN", "softnet_data", "input_pkt_queue.qlen"),
    ("OFF_SD_BACKLOG", "softnet_data", "backlog"),
    ("OFF_NAPI_POLL", "napi_struct", "poll"),
)


def struct_offsets(btf: Btf) -> dict[str, int]:
    try:
        return {macro: btf.offsetof(struct, path) for macro, struct, path in OFFSETS}
    except BtfError as e:
        raise UserError(
            f"kernel BTF lacks a field ovslat needs ({e}); "
            "this kernel is not supported, please report it"
        ) from e


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
