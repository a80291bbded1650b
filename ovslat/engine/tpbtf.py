"""Load a compiled function as a BTF-enabled raw tracepoint program (tp_btf)
and attach it, with the bpf(2) syscall.

bcc 0.26 compiles the program but can load a tracing program only as fentry,
fexit or LSM (its loader picks the attach type from the function's name), so
this does BPF_PROG_LOAD and BPF_RAW_TRACEPOINT_OPEN itself. What tp_btf buys:
the verifier knows the tracepoint's arguments by their BTF types, so a field
of an sk_buff or net_device is a plain load, checked against the type and
made fault-safe by the kernel, where a raw tracepoint needs a
bpf_probe_read_kernel() helper call for each.
"""

from __future__ import annotations

import ctypes
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF = 321  # x86_64
_BPF_PROG_LOAD = 5
_BPF_RAW_TRACEPOINT_OPEN = 17
_BPF_PROG_TYPE_TRACING = 26
_BPF_TRACE_RAW_TP = 23
_OBJ_NAME_LEN = 16
_LOG_SIZE = 1 << 20


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = _libc.syscall(_SYS_BPF, cmd, buf, len(attr))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def load(insns: bytes, name: str, btf_id: int, license: bytes = b"GPL") -> int:
    """The program's fd. `btf_id`: vmlinux's btf_trace_<tracepoint> typedef.
    Raises OSError whose text ends with the verifier's last word."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    prog_name = name.encode()[: _OBJ_NAME_LEN - 1]

    def attr(log_level: int, log) -> bytes:
        # union bpf_attr, BPF_PROG_LOAD, up to attach_btf_id (Linux 5.5)
        return struct.pack(
            "<IIQQIIQII16sIIIIQIIQIII",
            _BPF_PROG_TYPE_TRACING,
            len(insns) // 8,
            ctypes.addressof(code),
            ctypes.addressof(lic),
            log_level,
            len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0,
            0,  # kern_version
            0,  # prog_flags
            prog_name,
            0,  # prog_ifindex
            _BPF_TRACE_RAW_TP,
            0,  # prog_btf_fd
            0,  # func_info_rec_size
            0,  # func_info
            0,  # func_info_cnt
            0,  # line_info_rec_size
            0,  # line_info
            0,  # line_info_cnt
            btf_id,
            0,  # attach_prog_fd
        )

    try:
        return _bpf(_BPF_PROG_LOAD, attr(0, None))
    except OSError as first:
        # again with the verifier's log, for the error's text only
        log = ctypes.create_string_buffer(_LOG_SIZE)
        try:
            return _bpf(_BPF_PROG_LOAD, attr(1, log))
        except OSError:
            pass
        lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "processed" not in ln), "")
        raise OSError(first.errno, f"{first.strerror}{': ' + why if why else ''}") from None


def attach(prog_fd: int) -> int:
    """A link fd: the program runs until it is closed. The tracepoint is the
    one the program was loaded for (the kernel takes no name for tp_btf)."""
    return _bpf(_BPF_RAW_TRACEPOINT_OPEN, struct.pack("<QII", 0, prog_fd, 0))
