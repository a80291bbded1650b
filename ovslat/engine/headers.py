"""Which kernel header tree bcc compiles ovslat's program against.

bcc wants a tree at /lib/modules/$(uname -r)/build. Production hosts often
have none for the running kernel (a kernel upgraded without its headers, a
custom build, this project's CI VM), but ovslat needs no exact headers: the
program includes uapi headers only and reads every kernel struct through
offsets taken from BTF (engine/kernel.py: OFF_* defines), never through a
header's layout. So any installed tree will do, and ovslat points bcc at it
through the environment (BCC_KERNEL_SOURCE plus include flags for the build
half of a split tree) instead of writing under /lib/modules, which belongs to
the host's packages. Pure path logic: tests run it on fake trees.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MODULES = Path("/lib/modules")
SRC_ROOTS = (Path("/usr/src"), Path("/usr/src/kernels"))
KHEADERS = Path("/sys/kernel/kheaders.tar.xz")
KCONFIG_H = "include/linux/kconfig.h"  # what bcc checks a source tree by
AUTOCONF_H = "include/generated/autoconf.h"  # what a build (object) tree has


@dataclass(frozen=True)
class HeaderTree:
    how: str  # "exact", "linked" (another kernel's, at bcc's default place),
    # "environment" (BCC_KERNEL_SOURCE), "installed" (found here), "kheaders"
    source: str  # the source half (include/linux/...)
    build: str | None  # the build half when split from it (Debian, SUSE)
    version: str | None  # the kernel the tree is for, when known
    exact: bool  # made for the running kernel

    def env(self) -> dict[str, str]:
        """What to put in the environment before bcc compiles."""
        return {"BCC_KERNEL_SOURCE": self.source} if self.how == "installed" else {}

    def cflags(self, arch: str = "x86") -> list[str]:
        """bcc searches the source half only when pointed at one directory:
        the build half's generated headers come as extra include paths."""
        if self.how not in ("installed", "environment") or not self.build:
            return []
        if self.build == self.source:
            return []
        b = self.build
        return [
            f"-I{b}/arch/{arch}/include/generated",
            f"-I{b}/include",
            f"-I{b}/arch/{arch}/include/generated/uapi",
            f"-I{b}/include/generated/uapi",
        ]

    def describe(self) -> str:
        where = self.source if not self.build or self.build == self.source else self.build
        if self.exact:
            return f"{where} (the running kernel's own headers)"
        if self.how == "kheaders":
            return f"{KHEADERS} (the running kernel's own, CONFIG_IKHEADERS)"
        return (
            f"{where} (headers of {self.version or 'another kernel'}: safe, the program includes "
            "uapi headers only and takes every kernel struct offset from BTF)"
        )


class NoHeaders(Exception):
    pass


def bcc_arch(machine: str) -> str:
    if machine in ("x86_64", "i686", "i386"):
        return "x86"
    if machine.startswith("aarch64") or machine.startswith("arm64"):
        return "arm64"
    return machine


def _is_source(d: Path) -> bool:
    return (d / KCONFIG_H).is_file()


def _is_build(d: Path) -> bool:
    return (d / AUTOCONF_H).is_file()


_INCLUDE = re.compile(r"^\s*include\s+(\S+)/Makefile\s*$", re.M)


def source_of(build: Path) -> Path | None:
    """The source half of a build tree: itself, its `source` link, or the
    tree its Makefile includes (Debian: `include .../linux-headers-V-common/Makefile`)."""
    if _is_source(build):
        return build
    link = build / "source"
    if _is_source(link):
        return link.resolve()
    try:
        m = _INCLUDE.search((build / "Makefile").read_text())
    except OSError:
        return None
    if m and _is_source(Path(m.group(1))):
        return Path(m.group(1))
    return None


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def _version_key(name: str) -> tuple[int, ...]:
    m = _VERSION.search(name)
    return tuple(int(x or 0) for x in m.groups()) if m else (0,)


def installed_trees(roots=SRC_ROOTS) -> list[tuple[str, Path, Path]]:
    """(name, source, build) of every complete tree under `roots`, newest first."""
    found = []
    for root in roots:
        try:
            entries = sorted(root.iterdir())
        except OSError:
            continue
        for d in entries:
            if d.is_dir() and _is_build(d):
                src = source_of(d)
                if src is not None:
                    found.append((d.name, src, d))
    return sorted(found, key=lambda t: _version_key(t[0]), reverse=True)


def tree_release(build: Path) -> str | None:
    """The kernel release a build tree was made for (kbuild writes it)."""
    try:
        return (build / "include" / "config" / "kernel.release").read_text().strip() or None
    except OSError:
        return None


def find(
    release: str | None = None,
    env: dict[str, str] | None = None,
    modules: Path = MODULES,
    roots=SRC_ROOTS,
    kheaders: Path = KHEADERS,
) -> HeaderTree:
    """The tree bcc will compile against, in bcc's own order where bcc would
    find one (BCC_KERNEL_SOURCE, then /lib/modules/R/build), then an
    installed tree of any version, then the kernel's built-in kheaders."""
    release = release or os.uname().release
    environ: dict[str, str] = dict(os.environ) if env is None else env
    if environ.get("BCC_KERNEL_SOURCE"):
        path = environ["BCC_KERNEL_SOURCE"]
        if not _is_source(Path(path)):
            raise NoHeaders(
                f"BCC_KERNEL_SOURCE={path} is not a kernel source tree (no {KCONFIG_H}): "
                "unset it or point it at one"
            )
        # The source half of a split tree (Debian's -common, as ovslat itself
        # sets it for the processes it starts): its build half joins it.
        half: str | None = None
        if not _is_build(Path(path)):
            for _, src, obj in installed_trees(roots):
                if src.resolve() == Path(path).resolve():
                    half = str(obj)
                    break
        return HeaderTree("environment", path, half, tree_release(Path(half or path)), False)
    build = modules / release / "build"
    if (build / "include").is_dir():
        # a link someone made to another kernel's tree is bcc's default, not exact
        target = build.resolve()
        exact = release in str(target) or tree_release(target) == release
        return HeaderTree(
            "exact" if exact else "linked", str(target), None, tree_release(target), exact
        )
    trees = installed_trees(roots)
    for name, src, obj in trees:  # the running kernel's own, installed but not linked
        if release in name:
            return HeaderTree("installed", str(src), str(obj), release, True)
    if trees:
        name, src, obj = trees[0]
        return HeaderTree("installed", str(src), str(obj), tree_release(obj) or name, False)
    if kheaders.exists():
        return HeaderTree("kheaders", str(kheaders), None, release, True)
    raise NoHeaders(
        "no kernel header tree for bcc to compile with: install one, any version will do "
        "(Debian/Ubuntu: apt install linux-headers-amd64; RHEL: dnf install kernel-devel), "
        "since ovslat takes struct offsets from BTF"
    )
