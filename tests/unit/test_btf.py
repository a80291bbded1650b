"""BTF reader against a hand-built blob (layout per include/uapi/linux/btf.h),
and against the running kernel's BTF where it exists."""

import os
import struct

import pytest

from ovslat.engine.btf import (
    ARRAY,
    ENUM,
    ENUM64,
    FUNC,
    INT,
    PTR,
    STRUCT,
    TYPEDEF,
    UNION,
    Btf,
    BtfError,
)


class Builder:
    def __init__(self):
        self.types = b""
        self.strings = b"\0"
        self.next_id = 1

    def s(self, name):
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind, name, vlen, size_or_type, extra=b"", kind_flag=0):
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        tid = self.next_id
        self.next_id += 1
        return tid

    def struct(self, name, size, members, kind=STRUCT, kind_flag=0):
        extra = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(kind, name, len(members), size, extra, kind_flag)

    def blob(self):
        hdr = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return hdr + self.types + self.strings


def sample():
    b = Builder()
    u32 = b.add(INT, "unsigned int", 0, 4, struct.pack("<I", 32))
    u16 = b.add(INT, "unsigned short", 0, 2, struct.pack("<I", 16))
    u64 = b.add(INT, "long long unsigned int", 0, 8, struct.pack("<I", 64))
    void_ptr = b.add(PTR, "", 0, 0)
    typedef = b.add(TYPEDEF, "__u32", 0, u32)
    inner = b.struct("", 16, [("next", void_ptr, 0), ("dev", void_ptr, 64)])
    anon_union = b.struct("", 16, [("", inner, 0), ("rbnode", u64, 0)], kind=UNION)
    arr = b.add(ARRAY, "", 0, 0, struct.pack("<III", u32, u32, 4))
    ns = b.struct("ns_common", 8, [("stashed", u32, 0), ("inum", typedef, 32)])
    # kind_flag set: member offsets carry a bitfield size in the top 8 bits.
    b.struct(
        "sk_buff",
        48,
        [
            ("", anon_union, 0),
            ("len", u32, 128),
            ("ns", ns, 192),
            ("flags", u16, (3 << 24) | 320),
            ("protocol", u16, 336),
            ("cb", arr, 352),
        ],
        kind_flag=1,
    )
    b.add(ENUM, "bpf_prog_type", 2, 4, struct.pack("<IiIi", b.s("A"), 0, b.s("B"), 32))
    b.add(ENUM64, "big", 1, 8, struct.pack("<III", b.s("HUGE"), 1, 2))
    b.add(FUNC, "enqueue_to_backlog", 0, 0)
    return Btf(b.blob())


def test_offsets_through_anonymous_members():
    btf = sample()
    assert btf.offsetof("sk_buff", "dev") == 8
    assert btf.offsetof("sk_buff", "len") == 16
    assert btf.offsetof("sk_buff", "ns.inum") == 28
    assert btf.offsetof("sk_buff", "protocol") == 42
    assert btf.member_size("sk_buff", "dev") == 8
    assert btf.member_size("sk_buff", "ns.inum") == 4  # through a typedef
    assert btf.sizeof("sk_buff") == 48


def test_missing_and_bitfield_members_are_errors():
    btf = sample()
    with pytest.raises(BtfError, match="no member nope"):
        btf.offsetof("sk_buff", "nope")
    with pytest.raises(BtfError, match="bitfield"):
        btf.offsetof("sk_buff", "flags")
    with pytest.raises(BtfError, match="struct missing"):
        btf.offsetof("missing", "x")


def test_enums_and_funcs():
    btf = sample()
    assert btf.enum_value("bpf_prog_type", "B") == 32
    assert btf.enum_value("big", "HUGE") == (2 << 32) | 1
    with pytest.raises(BtfError):
        btf.enum_value("bpf_prog_type", "C")
    assert btf.has_func("enqueue_to_backlog")
    assert not btf.has_func("ip_rcv")


def test_bad_blob():
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 32)
    with pytest.raises(BtfError, match="cannot read"):
        Btf.load("/nonexistent/vmlinux")


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="no kernel BTF")
def test_running_kernel_layouts_are_consistent():
    btf = Btf.load()
    # sk_buff starts with next/prev, so dev sits right after two pointers.
    assert btf.offsetof("sk_buff", "dev") == 16
    assert btf.member_size("sk_buff", "protocol") == 2
    assert btf.member_size("net_device", "ifindex") == 4
    assert btf.member_size("net", "ns.inum") == 4
    qlen = btf.offsetof("softnet_data", "input_pkt_queue.qlen")
    assert qlen == btf.offsetof("softnet_data", "input_pkt_queue") + btf.offsetof(
        "sk_buff_head", "qlen"
    )
