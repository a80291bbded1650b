"""The kernel/user ABI: every enum, constant and struct that bpf/ovslat.h shares
with Python, in one place. Nothing else in ovslat spells a value of the
header; tests/unit/test_abi.py parses the header and fails when either side
changes alone.

Pure: ctypes and enum only, importable without bcc or root. bcc builds its
own ctypes types for map keys and values from the C; the mirrors here serve
what bcc cannot derive (perf events holding nested structs) and sizes.
"""

from __future__ import annotations

import ctypes
from enum import IntEnum, IntFlag

u8, u16, u32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32
s32, u64 = ctypes.c_int32, ctypes.c_uint64


# ---- enums: member names are the C enumerators without their prefix ----------------
class Stage(IntEnum):  # enum stage, STAGE_*
    ENQUEUE_TO_RECEIVE = 0  # S1 -> S2
    RECEIVE_TO_IP = 1  # S2 -> S3


class MaxMetric(IntEnum):  # enum max_metric, MAX_*
    ENQUEUE_TO_RECEIVE = 0
    RECEIVE_TO_IP = 1
    QUEUE_DEPTH = 2


class ProbePoint(IntEnum):  # enum probe_point, POINT_*
    S1 = 0
    S2 = 1
    S3 = 2


class DebugCounter(IntEnum):  # enum debug_counter, DBG_*
    PROBE_ENTRY = 0
    HANDLE_ENTRY = 1
    PARSE_ENTRY = 2
    PARSE_SUCCESS = 3
    IP_FILTER = 4
    PROTO_FILTER = 5
    PORT_FILTER = 6
    FLOW_CREATE = 7
    FLOW_LOOKUP = 8
    FLOW_FOUND = 9
    LATENCY_SUBMIT = 10


class ThresholdStage(IntEnum):  # enum threshold_stage, THRESHOLD_*
    ENQUEUE_TO_RECEIVE = 0  # S1 -> S2 on one interface
    TRANSIT = 1  # S2 on one interface -> S1 on the next
    RECEIVE_TO_IP = 2  # S2 -> S3 on one interface (not the tracepoint backend)


class HopKind(IntEnum):  # enum hop_kind, HOP_*
    TRANSIT = 0
    E2E = 1


class TunnelType(IntEnum):  # enum tunnel_type, TUNNEL_*
    NONE = 0
    VXLAN = 1
    GENEVE = 2


class ConfigFlag(IntFlag):  # struct config.flags, F_*
    SRC_IP = 1 << 0
    DST_IP = 1 << 1
    SRC_PORT = 1 << 2
    DST_PORT = 1 << 3
    PROTOCOL = 1 << 4
    HOPS = 1 << 5
    THRESHOLD = 1 << 6
    PORTS_EITHER = 1 << 7  # the seed tools' port filters: either port matches
    FAMILY = 1 << 8  # only packets of Config.family


class IfaceFlag(IntFlag):  # struct iface_val.flags, IFACE_*
    NO_RPS = 1 << 0


# The program's variants, compiled with -DBACKEND_<NAME>; --attach auto tries them in this order.
BACKENDS = ("fentry", "kprobe", "tracepoint")

NSTAGES = len(Stage)
NMAX = len(MaxMetric)
NPOINTS = len(ProbePoint)
NDBG = len(DebugCounter)
NBUCKETS = 160
HOP_SLOTS = 16384
MAX_NETS = 256  # networks per address filter (src_nets, dst_nets)
MAX_TUNNEL_PORTS = 8  # UDP ports whose packets' inner headers are parsed
TUNNEL_TYPE_SHIFT = 24  # a tunnel word: type << TUNNEL_TYPE_SHIFT | VNI

# The words used everywhere (C enum, JSON keys, table columns, YAML).
STAGES = tuple(s.name.lower() for s in Stage)
THRESHOLD_STAGES = tuple(s.name.lower() for s in ThresholdStage)


# ---- structs ----------------------------------------------------------------------
class IfaceKey(ctypes.Structure):
    _fields_ = [("netns", u32), ("ifindex", u32)]


class IfaceVal(ctypes.Structure):
    _fields_ = [("slot", u32), ("flags", u32)]


class Config(ctypes.Structure):
    _fields_ = [
        ("flags", u32),
        ("family", u32),
        ("src_port", u16),
        ("dst_port", u16),
        ("protocol", u32),
        ("epoch", u32),
        ("backlog_poll_fn", u64),
        ("threshold_ns", u64),
        ("events_per_cpu_s", u32),
        ("threshold_stages", u32),  # bit (1 << ThresholdStage) each
        ("tunnel_port", u16 * MAX_TUNNEL_PORTS),
        ("tunnel_type", u8 * MAX_TUNNEL_PORTS),  # TunnelType each
    ]


class Counters(ctypes.Structure):
    _fields_ = [
        ("enqueued", u64),
        ("received", u64),
        ("received_sync", u64),
        ("segments", u64),
        ("ip_rcv", u64),
        ("cross_cpu", u64),
        ("parse_failures", u64),
        ("flow_lookup_failures", u64),
        ("queue_depth_sum", u64),
        ("queue_depth_samples", u64),
        ("slow", u64),
        ("events_suppressed", u64),
        ("dropped", u64),
        ("hops_lost", u64),
        ("encapsulated", u64),
        ("ipv6_enqueued", u64),
        ("ipv6_received", u64),
        ("ipv6_received_sync", u64),
        ("ipv6_ip_rcv", u64),
        ("debug", u64 * (NPOINTS * NDBG)),
    ]


# struct counters' plain per-interface counters, in their order; `debug` is read apart
COUNTER_FIELDS = tuple(f[0] for f in Counters._fields_ if f[0] != "debug")


class Maxima(ctypes.Structure):
    _fields_ = [("v", u64 * NMAX)]


class Hist(ctypes.Structure):
    _fields_ = [("buckets", u64 * NBUCKETS), ("sum_ns", u64)]


class Origin(ctypes.Structure):
    _fields_ = [("ns", u64), ("slot", u32), ("tunnel", u32)]


class Flow(ctypes.Structure):
    _fields_ = [
        ("ts_enqueue_ns", u64),
        ("origin", Origin),
        ("fingerprint", u32),
        ("slot", u32),
        ("enqueue_cpu", u32),
        ("queue_depth", u32),
        ("tentative", u32),
        ("pad", u32),
    ]


class LastReceive(ctypes.Structure):
    _fields_ = [
        ("skb", u64),
        ("ts_receive_ns", u64),
        ("origin", Origin),
        ("slot", u32),
        ("v6", u32),
    ]


class NetKey(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("family", u32), ("addr", u32 * 4)]


class PktId(ctypes.Structure):
    _fields_ = [
        ("saddr", u32 * 4),
        ("daddr", u32 * 4),
        ("l4", u32),
        ("seq", u32),
        ("ack", u32),
        ("ip_id", u32),
        ("tot_len", u16),
        ("proto", u8),
        ("family", u8),
    ]


class HopMark(ctypes.Structure):
    _fields_ = [
        ("ts_receive_ns", u64),
        ("origin", Origin),
        ("slot", u32),
        ("cpu", u32),
        ("fingerprint", u32),
        ("pad", u32),
    ]


class HopEntry(ctypes.Structure):
    _fields_ = [("id", PktId), ("mark", HopMark)]


class HopKey(ctypes.Structure):
    _fields_ = [("from", u16), ("to", u16), ("kind", u16), ("half", u16), ("tunnel", u32)]


class TunnelHdr(ctypes.Structure):
    _fields_ = [
        ("saddr", u32 * 4),
        ("daddr", u32 * 4),
        ("tunnel", u32),
        ("sport", u16),
        ("dport", u16),
        ("family", u32),
    ]


class SlowEvent(ctypes.Structure):
    _fields_ = [
        ("ts_enqueue_ns", u64),
        ("ts_receive_ns", u64),
        ("id", PktId),
        ("sport", u16),
        ("dport", u16),
        ("slot", u32),
        ("enqueue_cpu", u32),
        ("receive_cpu", u32),
        ("queue_depth", u32),
        ("stack_id", s32),
        ("pid", u32),
        ("stage", u32),
        ("from_slot", u32),
        ("outer", TunnelHdr),
        ("comm", ctypes.c_char * 16),
    ]


class DropKey(ctypes.Structure):
    _fields_ = [("slot", u32), ("reason", u32)]


# What the header declares, for the test that holds the two sides together:
# C enum -> (its Python enum, the enumerators' prefix, the name of its count).
ENUMS: dict[str, tuple[type[IntEnum], str, str | None]] = {
    "stage": (Stage, "STAGE_", "NSTAGES"),
    "max_metric": (MaxMetric, "MAX_", "NMAX"),
    "probe_point": (ProbePoint, "POINT_", "NPOINTS"),
    "debug_counter": (DebugCounter, "DBG_", "NDBG"),
    "threshold_stage": (ThresholdStage, "THRESHOLD_", None),
    "hop_kind": (HopKind, "HOP_", None),
    "tunnel_type": (TunnelType, "TUNNEL_", None),
}
FLAGS: dict[str, type[IntFlag]] = {"F_": ConfigFlag, "IFACE_": IfaceFlag}
DEFINES = {
    "NBUCKETS": NBUCKETS,
    "HOP_SLOTS": HOP_SLOTS,
    "MAX_NETS": MAX_NETS,
    "MAX_TUNNEL_PORTS": MAX_TUNNEL_PORTS,
    "TUNNEL_TYPE_SHIFT": TUNNEL_TYPE_SHIFT,
}
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "iface_key": IfaceKey,
    "iface_val": IfaceVal,
    "config": Config,
    "net_key": NetKey,
    "counters": Counters,
    "maxima": Maxima,
    "hist": Hist,
    "flow": Flow,
    "last_receive": LastReceive,
    "origin": Origin,
    "tunnel_hdr": TunnelHdr,
    "pkt_id": PktId,
    "hop_mark": HopMark,
    "hop_entry": HopEntry,
    "hop_key": HopKey,
    "slow_event": SlowEvent,
    "drop_key": DropKey,
}


def tunnel_of(word: int) -> tuple[str, int] | None:
    """(type, VNI) of a tunnel word (struct origin.tunnel), None for 0."""
    if not word:
        return None
    kind = word >> TUNNEL_TYPE_SHIFT
    name = TunnelType(kind).name.lower() if kind in TunnelType._value2member_map_ else str(kind)
    return name, word & ((1 << TUNNEL_TYPE_SHIFT) - 1)


def cpu_sums(per_cpu, struct: type[ctypes.Structure]) -> list[int]:
    """The sum over CPUs of each 64-bit word of `struct` (one of the all-u64
    structs above: counters, hist), from the per-CPU array bcc reads (one
    struct per CPU, back to back): a strided sum per word in C, instead of a
    Python attribute read per word and CPU."""
    n = ctypes.sizeof(struct) // 8
    words = memoryview(per_cpu).cast("B").cast("Q")
    return [sum(words[i::n]) for i in range(n)]


def word_index(struct: type[ctypes.Structure], field: str) -> int:
    """Where `field` starts, in 64-bit words."""
    return getattr(struct, field).offset // 8
