"""Builds ovslat's wheel and Debian package (./dev package):

    dist/ovslat-<version>-py3-none-any.whl
    dist/ovslat_<version>_all.deb

The .deb is the wheel's files under /usr/lib/python3/dist-packages, run by
the system python3 with Debian's own packages as dependencies (nothing
vendored), plus /usr/bin commands, a man page and bash completion generated
from ovslat's own argument parsers, and ovslat-export.service. Built with
dpkg-deb: no debhelper needed on the build machine.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

# Debian 12's packages of what pyproject asks for (tested: README, Installing).
DEPENDS = [
    "python3 (>= 3.11)",
    "python3-bpfcc (>= 0.26)",
    "python3-pyroute2 (>= 0.7.2)",
    "python3-openvswitch (>= 3.1)",
    "python3-rich (>= 13.3)",
    "python3-yaml (>= 6.0)",
    "python3-prometheus-client (>= 0.16)",
    "adduser",
]
RECOMMENDS = ["linux-headers-amd64 | linux-headers-generic | linux-headers"]
# /usr/bin name -> (module, function), as pyproject's [project.scripts]
COMMANDS = {
    "ovslat": ("ovslat.cli", "main"),
    "enqueue_to_iprec_latency": ("ovslat.commands.seedcompat", "latency_main"),
    "enqueue_to_iprec_latency_threshold": ("ovslat.commands.seedcompat", "threshold_main"),
}


def version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def build_wheel(dist: Path, python: str) -> Path:
    dist.mkdir(parents=True, exist_ok=True)
    for old in dist.glob("ovslat-*.whl"):
        old.unlink()
    subprocess.run(
        [python, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
         "-w", str(dist), str(REPO)],
        check=True,
    )  # fmt: skip
    (wheel,) = dist.glob("ovslat-*.whl")
    return wheel


# ---- man page and completion, from the parsers themselves ------------------------


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _roff(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln.startswith((".", "'")) else ln for ln in text.splitlines())


def _options(p: argparse.ArgumentParser) -> list[str]:
    out = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
            continue
        if a.option_strings:
            names = ", ".join(a.option_strings)
            if a.nargs != 0:
                names += f" {a.metavar or a.dest.upper()}"
        else:
            names = a.metavar or a.dest.upper()
        out += [".TP", f"\\fB{_roff(names)}\\fR", _roff(a.help or "")]
    return out


def man_page(ver: str) -> str:
    from ovslat.cli import build_parser

    p = build_parser()
    lines = [
        f'.TH OVSLAT 1 "" "ovslat {ver}" "User Commands"',
        ".SH NAME",
        "ovslat \\- receive\\-path latency of Open vSwitch interfaces, with one BPF program",
        ".SH SYNOPSIS",
        "\\fBovslat\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(p.description or ""),
        "It measures enqueue_to_backlog \\(-> __netif_receive_skb \\(-> ip_rcv on every chosen "
        "interface at once. It needs root, or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and "
        "CAP_SYSLOG (CAP_SYS_ADMIN for interfaces in other network namespaces); "
        "\\fBovslat doctor\\fR says what this host lacks.",
        ".SH COMMANDS",
    ]
    for name, sp in _subparsers(p).items():
        lines += [f".SS {name}", _roff(sp.description or ""), *_options(sp)]
    lines += [
        ".SH SEED-COMPATIBLE COMMANDS",
        "\\fBenqueue_to_iprec_latency\\fR and \\fBenqueue_to_iprec_latency_threshold\\fR take "
        "the seed tools' options and print their text formats (\\fB\\-\\-help\\fR for each).",
        ".SH FILES",
        ".TP",
        "/etc/default/ovslat\\-export",
        "the arguments of ovslat\\-export.service (OVSLAT_EXPORT_ARGS)",
        ".SH EXIT STATUS",
        "0 on success; 1 when a scenario's assertion or doctor's check fails; 2 for bad input, "
        "with one line naming the problem.",
        ".SH SEE ALSO",
        "/usr/share/doc/ovslat/README.md.gz",
    ]
    return "\n".join(lines) + "\n"


def completion() -> str:
    """bash completion: subcommands, then each one's options."""
    from ovslat.cli import build_parser

    subs = _subparsers(build_parser())
    cases = []
    for name, sp in subs.items():
        opts = " ".join(o for a in sp._actions for o in a.option_strings)
        cases.append(f'    {name}) opts="{opts}" ;;')
    return (
        "# bash completion for ovslat (generated from its argument parser)\n"
        "_ovslat() {\n"
        '  local cur=${COMP_WORDS[COMP_CWORD]} opts\n'
        "  if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
        f'    COMPREPLY=($(compgen -W "{" ".join(subs)} --help" -- "$cur"))\n'
        "    return\n"
        "  fi\n"
        '  case ${COMP_WORDS[1]} in\n' + "\n".join(cases) + "\n"
        '    *) opts="" ;;\n'
        "  esac\n"
        '  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur"));\n'
        '  else COMPREPLY=($(compgen -f -- "$cur")); fi\n'
        "}\n"
        "complete -F _ovslat ovslat\n"
    )


# ---- the .deb -----------------------------------------------------------------------

POSTINST = """#!/bin/sh
set -e
# the exporter's own user (ovslat-export.service); no home, no login
if [ "$1" = configure ] && ! getent passwd ovslat >/dev/null; then
  adduser --system --group --no-create-home --home /nonexistent --quiet ovslat
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
exit 0
"""
POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ] && getent passwd ovslat >/dev/null; then
  deluser --system --quiet ovslat || true
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
exit 0
"""


def _write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def _gz(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(text.encode())
    return buf.getvalue()


def build_deb(wheel: Path, dist: Path) -> Path:
    ver = version()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        site = root / "usr/lib/python3/dist-packages"
        site.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        # the wheel's entry points are pip's to write; Debian's python3 runs these
        for info in site.glob("ovslat-*.dist-info"):
            (info / "INSTALLER").write_text("dpkg\n")
            record = info / "RECORD"
            record.unlink(missing_ok=True)  # dpkg owns the file list
        for name, (module, fn) in COMMANDS.items():
            _write(
                root,
                f"usr/bin/{name}",
                f"#!/usr/bin/python3\nimport sys\n\nfrom {module} import {fn}\n\n"
                f"sys.exit({fn}())\n",
                0o755,
            )
        _write(root, "usr/share/man/man1/ovslat.1.gz", _gz(man_page(ver)))
        for name in list(COMMANDS)[1:]:
            (root / f"usr/share/man/man1/{name}.1.gz").symlink_to("ovslat.1.gz")
        _write(root, "usr/share/bash-completion/completions/ovslat", completion())
        _write(root, "lib/systemd/system/ovslat-export.service",
               (HERE / "ovslat-export.service").read_text())  # fmt: skip
        _write(root, "etc/default/ovslat-export", (HERE / "ovslat-export.default").read_text())
        _write(root, "usr/share/doc/ovslat/README.md.gz", _gz((REPO / "README.md").read_text()))
        _write(root, "usr/share/doc/ovslat/copyright", _copyright())
        size_kb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024
        control = "\n".join(
            [
                "Package: ovslat",
                f"Version: {ver}",
                "Architecture: all",
                "Maintainer: ovslat developers <ovslat@localhost>",
                "Section: net",
                "Priority: optional",
                f"Installed-Size: {size_kb}",
                f"Depends: {', '.join(DEPENDS)}",
                f"Recommends: {', '.join(RECOMMENDS)}",
                "Description: receive-path latency of Open vSwitch interfaces (one BPF program)",
                " ovslat measures enqueue_to_backlog -> __netif_receive_skb -> ip_rcv latency",
                " on every interface of an Open vSwitch host at once: a live table, slow-packet",
                " events with stacks, scenario runs and a Prometheus exporter.",
                "",
            ]
        )
        _write(root, "DEBIAN/control", control)
        _write(root, "DEBIAN/conffiles", "/etc/default/ovslat-export\n")
        _write(root, "DEBIAN/postinst", POSTINST, 0o755)
        _write(root, "DEBIAN/postrm", POSTRM, 0o755)
        for d in root.rglob("*"):
            if d.is_dir():
                d.chmod(0o755)
        deb = dist / f"ovslat_{ver}_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return deb


def _copyright() -> str:
    return (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: ovslat\n\nFiles: *\nCopyright: the ovslat developers\n"
        "License: GPL-2.0-only\n On Debian systems the full text of the GNU General Public\n"
        " License version 2 is in /usr/share/common-licenses/GPL-2.\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description="build ovslat's wheel and .deb into dist/")
    ap.add_argument("--dist", default=str(REPO / "dist"))
    ap.add_argument("--python", default=sys.executable, help="python whose pip builds the wheel")
    args = ap.parse_args()
    dist = Path(args.dist)
    wheel = build_wheel(dist, args.python)
    deb = build_deb(wheel, dist)
    for f in (wheel, deb):
        print(f"{f} ({f.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
