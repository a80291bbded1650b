"""Attach a BPF netfilter program (Linux >= 6.4) with the bpf(2) syscall.

bcc 0.26 loads BPF_PROG_TYPE_NETFILTER programs but has no call to link them,
so this does BPF_LINK_CREATE itself. A netfilter link belongs to the network
namespace of the calling thread: attaching in another namespace means
entering it for the duration of the call (setns), then coming back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF = 321  # x86_64
_BPF_LINK_CREATE = 28
_CLONE_NEWNET = 0x40000000
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
NF_INET_PRE_ROUTING = 0
# NF_IP_PRI_FIRST itself is reserved by the kernel for hooks that must be
# first; one above it still runs before conntrack, iptables and nftables.
PRIORITY_FIRST = -(2**31) + 1
# BPF netfilter links may not share a priority (EBUSY): a second ovslat in the
# same namespace takes the next one. Any of these still runs before the
# first hook at a named priority (raw, -300).
PRIORITY_TRIES = 64


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def link_create(
    prog_fd: int, attach_type: int, netns_path: str | None = None, pf: int = NFPROTO_IPV4
) -> int:
    """Returns the link fd of `pf`'s (NFPROTO_*) PRE_ROUTING hook; closing it
    detaches the program. Takes the first free priority from PRIORITY_FIRST
    on (other tools may hold some)."""
    priority = PRIORITY_FIRST
    while True:
        try:
            return _link_create(prog_fd, attach_type, netns_path, priority, pf)
        except OSError as e:
            if e.errno != errno.EBUSY or priority == PRIORITY_FIRST + PRIORITY_TRIES - 1:
                raise
            priority += 1


def _link_create(
    prog_fd: int, attach_type: int, netns_path: str | None, priority: int, pf: int
) -> int:
    # union bpf_attr, BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags,
    # then netfilter { pf, hooknum, priority, flags }.
    attr = struct.pack(
        "<IIIIIIiI",
        prog_fd,
        0,
        attach_type,
        0,
        pf,
        NF_INET_PRE_ROUTING,
        priority,
        0,
    ) + bytes(32)
    buf = ctypes.create_string_buffer(attr, len(attr))
    home = target = None
    try:
        if netns_path:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(netns_path, os.O_RDONLY)
            _setns(target)
        fd = _libc.syscall(_SYS_BPF, _BPF_LINK_CREATE, buf, len(attr))
        err = ctypes.get_errno()
    finally:
        if home is not None:
            _setns(home)
            os.close(home)
        if target is not None:
            os.close(target)
    if fd < 0:
        raise OSError(err or errno.EINVAL, f"netfilter link: {os.strerror(err)}")
    return fd
