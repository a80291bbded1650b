"""bpf/ovslat.h and ovslat/abi.py describe one ABI: parse the header and
hold every enum, flag, size and struct of it against the Python mirror, so
that a change on one side alone fails here."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from ovslat import abi

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "ovslat.h"
C_TYPES = {
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__s32": ctypes.c_int32,
    "__u64": ctypes.c_uint64,
    "char": ctypes.c_char,
}


def _source() -> str:
    text = HEADER.read_text()
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments out


def _value(expr: str, known: dict[str, int]) -> int:
    """An integer constant expression of the header: numbers, names already
    defined, ( ) << | * +."""
    expr = re.sub(r"\b[A-Z_][A-Z0-9_]*\b", lambda m: str(known[m.group(0)]), expr)
    if not re.fullmatch(r"[\d\s()<|*+]+", expr):
        raise ValueError(f"not a constant expression: {expr!r}")
    return eval(expr)  # digits and operators only, checked above


def parse_header() -> tuple[dict, dict, dict]:
    """(enums: name -> {enumerator: value}, defines: name -> value,
    structs: name -> [(field, type, array length or None)])."""
    src = _source()
    known: dict[str, int] = {}
    enums: dict[str, dict[str, int]] = {}
    for name, body in re.findall(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", src, re.S):
        members, nxt = {}, 0
        for item in filter(None, (x.strip() for x in body.split(","))):
            key, _, val = (p.strip() for p in item.partition("="))
            nxt = _value(val, known) if val else nxt
            members[key] = known[key] = nxt
            nxt += 1
        enums[name] = members
    defines = {}
    for name, expr in re.findall(r"^#define\s+([A-Z_][A-Z0-9_]*)[ \t]+(.+)$", src, re.M):
        defines[name] = known[name] = _value(expr.strip(), known)
    structs = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", src, re.S):
        fields = []
        for decl in filter(None, (d.strip() for d in body.split(";"))):
            m = re.fullmatch(r"((?:struct\s+)?\w+)\s+(\w+)(?:\[(.+)\])?", decl)
            assert m, f"struct {name}: cannot read {decl!r}"
            ctype, field, length = m.groups()
            fields.append((field, ctype, _value(length, known) if length else None))
        structs[name] = fields
    return enums, defines, structs


ENUMS, DEFINES, STRUCTS = parse_header()


def test_the_parser_reads_the_header():
    assert ENUMS["stage"] == {
        "STAGE_ENQUEUE_TO_RECEIVE": 0,
        "STAGE_RECEIVE_TO_IP": 1,
        "NSTAGES": 2,
    }
    assert DEFINES["F_THRESHOLD"] == 1 << 6
    assert ("debug", "__u64", 33) in STRUCTS["counters"]


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum(name):
    assert name in abi.ENUMS, f"enum {name} of ovslat.h has no mirror in ovslat/abi.py"
    py, prefix, count = abi.ENUMS[name]
    c = dict(ENUMS[name])
    if count:
        assert c.pop(count) == len(py), f"{count} in ovslat.h vs {len(py)} members in {py}"
    assert c == {prefix + m.name: m.value for m in py}


def test_every_mirrored_enum_is_in_the_header():
    assert set(abi.ENUMS) == set(ENUMS)


@pytest.mark.parametrize("prefix", sorted(abi.FLAGS))
def test_flags(prefix):
    c = {k: v for k, v in DEFINES.items() if k.startswith(prefix)}
    assert c == {prefix + f.name: f.value for f in abi.FLAGS[prefix]}


def test_sizes():
    flags = tuple(abi.FLAGS)
    c = {k: v for k, v in DEFINES.items() if not k.startswith(flags)}
    assert c == abi.DEFINES


def _ctype(ctype: str, length: int | None):
    base = abi.STRUCTS[ctype.split()[1]] if ctype.startswith("struct") else C_TYPES[ctype]
    return base * length if length else base


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct(name):
    assert name in abi.STRUCTS, f"struct {name} of ovslat.h has no mirror in ovslat/abi.py"
    want = [(f, _ctype(t, n)) for f, t, n in STRUCTS[name]]
    have = list(abi.STRUCTS[name]._fields_)
    assert [f for f, _ in have] == [f for f, _ in want], name
    for (field, a), (_, b) in zip(have, want, strict=True):
        assert a == b, f"struct {name}.{field}: {a.__name__} in abi.py, {b.__name__} in ovslat.h"


def test_every_mirrored_struct_is_in_the_header():
    assert set(abi.STRUCTS) == set(STRUCTS)


def test_counters_are_the_snapshot_counters():
    """Every plain kernel counter reaches the Snapshot (and so JSON, text and
    the exporter) under its C name."""
    from ovslat.model.snapshot import Counters

    assert set(abi.COUNTER_FIELDS) <= set(Counters.__dataclass_fields__)


def test_cpu_sums_are_the_per_field_sums():
    """What the collector reads: per-CPU structs summed word by word, as
    attribute reads would sum them (abi.cpu_sums, one strided sum per word)."""
    counters = (abi.Counters * 3)()
    for cpu, c in enumerate(counters):
        c.enqueued, c.received_sync, c.hops_lost = 10 + cpu, 1 << 40, cpu
        c.debug[abi.NPOINTS * abi.NDBG - 1] = 7
    words = abi.cpu_sums(counters, abi.Counters)
    for name in abi.COUNTER_FIELDS:
        assert words[abi.word_index(abi.Counters, name)] == sum(getattr(c, name) for c in counters)
    assert words[abi.word_index(abi.Counters, "enqueued")] == 33
    assert words[-1] == 21 and len(words) == ctypes.sizeof(abi.Counters) // 8
    hists = (abi.Hist * 4)()
    hists[1].buckets[3], hists[3].buckets[3], hists[2].buckets[159] = 5, 2, 1
    hists[0].sum_ns, hists[3].sum_ns = 100, 11
    h = abi.cpu_sums(hists, abi.Hist)
    assert h[3] == 7 and h[159] == 1 and h[abi.word_index(abi.Hist, "sum_ns")] == 111
    assert sum(h[: abi.NBUCKETS]) == 8
