"""What ovslat needs from the kernel's privilege model, and which of it this
process has: root, or exactly the capabilities below (the exporter's
systemd unit grants them to a user of its own). Pure: parses
/proc/self/status, so it tests without root."""

from __future__ import annotations

import os

# name -> (capability number, why ovslat needs it)
REQUIRED = {
    "CAP_BPF": (39, "load BPF programs and create their maps"),
    "CAP_PERFMON": (
        38,
        "attach tracing programs (tracepoints, kprobes, fentry), read kernel memory from them "
        "and open their perf buffers",
    ),
    "CAP_NET_ADMIN": (12, "link the S3 netfilter program into a network namespace"),
    "CAP_SYSLOG": (
        34,
        "read kernel addresses in /proc/kallsyms (the hooks' symbols, the backlog learner, "
        "stack frames); without it they read as 0",
    ),
}
# Only for some targets: interfaces in another network namespace.
FOR_NAMESPACES = {
    "CAP_SYS_ADMIN": (21, "enter another network namespace (setns) to resolve and hook its ports"),
}
ALL = {**REQUIRED, **FOR_NAMESPACES}


def effective(status_path: str = "/proc/self/status") -> int:
    """The effective capability mask of this process."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing(names, mask: int | None = None) -> list[str]:
    mask = effective() if mask is None else mask
    return [n for n in names if not mask >> ALL[n][0] & 1]


def problem(other_netns: bool = False, mask: int | None = None) -> str | None:
    """None when this process may run ovslat; else one line naming what is
    missing and how to get it."""
    if os.geteuid() == 0 and mask is None:
        mask = effective()  # root normally has all, but a container's root may not
    need = list(REQUIRED) + (list(FOR_NAMESPACES) if other_netns else [])
    lack = missing(need, mask)
    if not lack:
        return None
    return (
        f"ovslat loads BPF programs and lacks {', '.join(lack)}: run it as root (sudo), or "
        "grant exactly those capabilities (as ovslat-export.service does: README, Installing)"
    )
