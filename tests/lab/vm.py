"""The kernel lab: Debian's stock kernel booted by qemu (TCG), with this
machine's root filesystem shared read-only over 9p under a tmpfs overlay, so
the guest runs the same python3, bcc, OVS and project tree on a kernel that
has kprobes, fentry and the openvswitch module (this VM's kernel has none).

    python3 tests/lab/vm.py prepare
    python3 tests/lab/vm.py run [--timeout S] -- COMMAND...

`run` prints the guest command's output as it comes and exits with its
status (124 on timeout, 3 when the guest never reached the command).
Stdlib only: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("OVSLAT_LAB_CACHE", REPO / ".lab-cache"))
# What the initramfs needs to mount the host root; their dependencies come
# from modules.dep.
INITRD_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
BEGIN, END = "@@ovslat-lab-begin@@", "@@ovslat-lab-end@@"
EXIT_TIMEOUT, EXIT_NO_GUEST = 124, 3


@dataclass(frozen=True)
class LabImage:
    version: str  # e.g. 6.1.0-56-amd64
    kernel: Path
    initrd: Path
    modules: Path  # the extracted /lib/modules/<version>


def kernel_version() -> str:
    """The kernel whose headers linux-headers-amd64 installed: bcc then
    compiles against the guest's exact headers."""
    dep = subprocess.run(
        ["dpkg-query", "-W", "-f=${Depends}", "linux-headers-amd64"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    name = dep.split()[0]  # linux-headers-6.1.0-56-amd64
    return name.removeprefix("linux-headers-")


def _extract_kernel(version: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in (f"linux-image-{version}-unsigned", f"linux-image-{version}"):
            r = subprocess.run(
                ["apt-get", "download", "-q", pkg], cwd=tmp, capture_output=True, text=True
            )
            if r.returncode == 0:
                break
        else:
            raise SystemExit(f"lab: cannot download linux-image-{version}: {r.stderr.strip()}")
        (deb,) = glob.glob(f"{tmp}/*.deb")
        subprocess.run(["dpkg", "-x", deb, str(dest)], check=True)
    subprocess.run(["depmod", "-b", str(dest), version], check=True)


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as initramfs)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        )
        out.write(hdr.encode() + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def _load_order(modules: Path, wanted: tuple[str, ...]) -> list[str]:
    """Module paths (relative to `modules`) in an order insmod accepts."""
    deps: dict[str, list[str]] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0]: m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps[mod]):  # modprobe loads the list's end first
            visit(dep)
        order.append(mod)

    for name in wanted:
        if name in by_name:  # absent means built in
            visit(by_name[name])
    return order


def _build_initrd(modules: Path, dest: Path) -> None:
    d, f = 0o040755, 0o100755
    entries = [
        (p, d, b"") for p in ("bin", "dev", "proc", "sys", "mods", "lower", "upper", "newroot")
    ]
    entries.append(("bin/busybox", f, Path("/bin/busybox").read_bytes()))
    entries.append(("init", f, (HERE / "initrd_init.sh").read_bytes()))
    names = []
    for rel in _load_order(modules, INITRD_MODULES):
        name = Path(rel).name
        entries.append((f"mods/{name}", 0o100644, (modules / rel).read_bytes()))
        names.append(name)
    entries.append(("mods/order", 0o100644, "\n".join(names).encode() + b"\n"))
    dest.write_bytes(gzip.compress(_cpio_newc(entries), 6))


def prepare() -> LabImage:
    version = kernel_version()
    root = CACHE / version
    modules = root / "lib" / "modules" / version
    kernel = root / "boot" / f"vmlinuz-{version}"
    initrd = root / "initrd.gz"
    stamp = root / ".ready"
    sources = [HERE / "initrd_init.sh", Path("/bin/busybox")]
    if not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _extract_kernel(version, root)
        stamp.touch()
    if not initrd.exists() or any(s.stat().st_mtime > initrd.stat().st_mtime for s in sources):
        _build_initrd(modules, initrd)
    return LabImage(version, kernel, initrd, modules)


def _qemu_argv(img: LabImage, run_dir: Path) -> list[str]:
    append = (
        f"console=ttyS0 quiet loglevel=1 panic=-1 ovslat.run={run_dir} "
        f"ovslat.init={HERE / 'guest_init.sh'} ovslat.modules={img.modules}"
    )
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "4096",
        # 4 vCPUs, not 2: with 2, OVS 3.1 starts no upcall handler and the
        # kernel datapath loses every miss (LAB.md).
        "-smp",
        "4",
        "-kernel",
        str(img.kernel),
        "-initrd",
        str(img.initrd),
        "-append",
        append,
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on," "multidevs=remap",
        "-virtfs",
        f"local,path={run_dir},mount_tag=results,security_model=none",
        "-nic",
        "none",
        "-nographic",
        "-no-reboot",
    ]


def run(
    command: str | list[str], timeout_s: float = 1500.0, out=None, run_dir: Path | None = None
) -> int:
    """Boot, run `command` (sh -c) in the guest in the caller's cwd, stream its
    output to `out`, power off. Returns the command's exit status. The guest
    sees `run_dir` (default: a fresh one) writable at the same path and in
    $OVSLAT_LAB_RUN, for files to bring back."""
    out = out or sys.stdout
    if not isinstance(command, str):  # one word is a shell script, more are an argv
        command = command[0] if len(command) == 1 else shlex.join(command)
    img = prepare()
    (CACHE / "runs").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=CACHE / "runs") as tmp:
        run_dir = Path(run_dir or tmp).resolve()
        (run_dir / "rc").unlink(missing_ok=True)
        (run_dir / "cmd.sh").write_text(
            f"export OVSLAT_LAB_RUN={shlex.quote(str(run_dir))}\n"
            f"cd {shlex.quote(os.getcwd())} || exit 1\n{command}\n"
        )
        proc = subprocess.Popen(
            _qemu_argv(img, run_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        tail: list[str] = []
        started = ended = False
        try:
            for raw in _lines(proc, deadline):
                line = raw.decode(errors="replace").rstrip("\r\n")
                if BEGIN in line:
                    started = True
                    continue
                if END in line:
                    ended = True
                    continue
                if started and not ended:
                    out.write(line + "\n")
                    out.flush()
                else:
                    tail = (tail + [line])[-40:]
        finally:
            try:  # the console closes a moment before qemu exits
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        rc_file = run_dir / "rc"
        if timed_out:
            out.write(
                f"lab: guest command timed out after {timeout_s:.0f}s; last console "
                "lines:\n" + "\n".join(tail) + "\n"
            )
            return EXIT_TIMEOUT
        if not started or not rc_file.exists():
            out.write("lab: the guest never ran the command; last console lines:\n")
            out.write("\n".join(tail) + "\n")
            return EXIT_NO_GUEST
        return int(rc_file.read_text().strip() or EXIT_NO_GUEST)


def _lines(proc: subprocess.Popen, deadline: float):
    """Console lines until qemu exits or the deadline passes."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if not sel.select(timeout=min(left, 1.0)):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        yield from lines
    if buf:
        yield buf


def run_captured(
    command: str | list[str], timeout_s: float = 1500.0, run_dir: Path | None = None
) -> tuple[int, str]:
    sink = io.StringIO()
    rc = run(command, timeout_s, sink, run_dir)
    return rc, sink.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ovslat kernel lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare")
    r = sub.add_parser("run")
    r.add_argument("--timeout", type=float, default=1500.0)
    r.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        img = prepare()
        print(f"lab: kernel {img.version}\n  {img.kernel}\n  {img.initrd}")
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("run needs a command")
    return run(command, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
