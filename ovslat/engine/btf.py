"""A small reader for the kernel's BTF (/sys/kernel/btf/vmlinux).

ovslat reads sk_buff / net_device / softnet_data fields by explicit byte offset
instead of trusting bcc's header tree: on kernels without matching headers (this
project's CI runs a 6.18 kernel with Debian's 6.1 headers) header layouts are
simply wrong. BTF describes the running kernel exactly.

Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F

# BTF_KIND_* values and the size of the data that follows each btf_type.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19
_FIXED_EXTRA = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_MEMBER = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class BtfError(Exception):
    """The BTF blob is unreadable, or lacks a type or member ovslat needs."""


@dataclass(frozen=True)
class _Type:
    kind: int
    name: str
    size_or_type: int
    kind_flag: bool
    data_off: int  # where the kind-specific data starts in the blob
    vlen: int


class Btf:
    def __init__(self, blob: bytes):
        if len(blob) < 24:
            raise BtfError("BTF blob too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._blob = blob
        self._str_base = hdr_len + str_off
        self._str_end = self._str_base + str_len
        self._types: list[_Type | None] = [None]  # type id 0 is void
        self._by_name: dict[tuple[int, str], int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", blob, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            t = _Type(kind, self._str(name_off), size_or_type, bool(info >> 31), pos + 12, vlen)
            tid = len(self._types)
            self._types.append(t)
            if t.name:
                self._by_name.setdefault((kind, t.name), tid)
            pos += 12 + _FIXED_EXTRA.get(kind, 0) + _PER_MEMBER.get(kind, 0) * vlen

    @classmethod
    def load(cls, path: str = VMLINUX) -> Btf:
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except OSError as e:
            raise BtfError(f"cannot read {path}: {e.strerror}") from e

    def _str(self, off: int) -> str:
        start = self._str_base + off
        return self._blob[start : self._blob.index(b"\0", start, self._str_end)].decode()

    def _resolve(self, tid: int) -> tuple[int, _Type]:
        """Skip typedefs and qualifiers."""
        t = self._types[tid]
        while t is not None and t.kind in _MODIFIERS:
            tid = t.size_or_type
            t = self._types[tid]
        if t is None:
            raise BtfError("type resolves to void")
        return tid, t

    def _members(self, t: _Type):
        for i in range(t.vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._blob, t.data_off + 12 * i)
            if t.kind_flag:  # bitfield size in the top 8 bits
                yield self._str(name_off), mtype, moff & 0xFFFFFF, moff >> 24
            else:
                yield self._str(name_off), mtype, moff, 0

    def _find(self, t: _Type, name: str) -> tuple[int, int] | None:
        """(bit offset, member type id) of `name`, looking inside anonymous members."""
        for mname, mtype, bit_off, bitfield in self._members(t):
            if mname == name:
                if bitfield or bit_off % 8:
                    raise BtfError(f"member {name} is a bitfield")
                return bit_off, mtype
            if not mname:
                _, inner = self._resolve(mtype)
                if inner.kind in (STRUCT, UNION):
                    found = self._find(inner, name)
                    if found:
                        return bit_off + found[0], found[1]
        return None

    def struct(self, name: str) -> int:
        for kind in (STRUCT, UNION):
            tid = self._by_name.get((kind, name))
            if tid:
                return tid
        raise BtfError(f"struct {name} not in kernel BTF")

    def offsetof(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted member path, e.g. offsetof('net', 'ns.inum')."""
        _, t = self._resolve(self.struct(struct_name))
        total_bits = 0
        for part in path.split("."):
            if t.kind not in (STRUCT, UNION):
                raise BtfError(f"{struct_name}.{path}: {part!r} is inside a non-struct member")
            found = self._find(t, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            total_bits += found[0]
            _, t = self._resolve(found[1])
        return total_bits // 8

    def sizeof(self, name: str) -> int:
        _, t = self._resolve(self.struct(name))
        return t.size_or_type

    def member_size(self, struct_name: str, path: str) -> int:
        _, t = self._resolve(self.struct(struct_name))
        for part in path.split("."):
            found = self._find(t, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            _, t = self._resolve(found[1])
        if t.kind == PTR:
            return 8
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return t.size_or_type
        raise BtfError(f"{struct_name}.{path} has no fixed scalar size")

    def enum_value(self, enum_name: str, member: str) -> int:
        tid = self._by_name.get((ENUM, enum_name)) or self._by_name.get((ENUM64, enum_name))
        if not tid:
            raise BtfError(f"enum {enum_name} not in kernel BTF")
        t = self._types[tid]
        assert t is not None  # _by_name holds only ids of parsed (non-void) types
        step = 8 if t.kind == ENUM else 12
        for i in range(t.vlen):
            pos = t.data_off + step * i
            name_off, lo = struct.unpack_from("<Ii", self._blob, pos)
            if self._str(name_off) == member:
                if t.kind == ENUM64:
                    lo_u, hi = struct.unpack_from("<II", self._blob, pos + 4)
                    return (hi << 32) | lo_u
                return lo
        raise BtfError(f"enum {enum_name} has no {member}")

    def enum_names(self, enum_name: str) -> dict[int, str]:
        """value -> member name of a (32-bit) enum; {} when the kernel lacks it."""
        tid = self._by_name.get((ENUM, enum_name))
        if not tid:
            return {}
        t = self._types[tid]
        assert t is not None  # _by_name holds only ids of parsed (non-void) types
        out: dict[int, str] = {}
        for i in range(t.vlen):
            name_off, val = struct.unpack_from("<Ii", self._blob, t.data_off + 8 * i)
            out.setdefault(val, self._str(name_off))
        return out

    def has_func(self, name: str) -> bool:
        """True when the kernel exposes `name` as a BTF FUNC: the condition for fentry."""
        return (FUNC, name) in self._by_name

    def tracepoint_btf_id(self, name: str) -> int | None:
        """The type id of tracepoint `name`'s btf_trace_<name> typedef: what a
        tp_btf program is loaded for. None when the kernel has none."""
        return self._by_name.get((TYPEDEF, f"btf_trace_{name}")) or None

    def tracepoint_args(self, name: str) -> int | None:
        """How many arguments tracepoint `name` passes a raw tracepoint
        program (its btf_trace_<name> prototype, less the leading __data);
        None when the kernel has no such tracepoint."""
        tid = self._by_name.get((TYPEDEF, f"btf_trace_{name}"))
        if not tid:
            return None
        t = self._types[tid]
        while t is not None and t.kind in (TYPEDEF, PTR, *_MODIFIERS):
            t = self._types[t.size_or_type]
        if t is None or t.kind != FUNC_PROTO:
            return None
        return t.vlen - 1
