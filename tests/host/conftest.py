"""What every host test shares: root (skipped cleanly without it) and a BPF
baseline of ovslat's own programs, so that no test leaves one attached."""

from __future__ import annotations

import contextlib
import os

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import ovslat_prog_ids, programs_left


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.root)


@pytest.fixture(autouse=True, scope="session")
def root():
    if os.geteuid() != 0:
        pytest.skip("host tests load BPF programs and build namespaces: run them as root")


@pytest.fixture(autouse=True)
def no_program_left(root):
    """ovslat's programs only (by name): the machine may run BPF of its own."""
    before = ovslat_prog_ids()
    yield
    assert not programs_left(before), "an ovslat BPF program outlived its process"


@pytest.fixture(scope="session")
def auto_backend(root) -> str:
    """The backend `--attach auto` picks on this kernel, from a real start
    record: tests compare with it instead of assuming this VM's."""
    from tests.ovslat_proc import Watch

    with Watch(["-i", "lo", "--protocol", "udp"]) as w:
        backend = w.start["backend"]
        w.stop()
    return backend


def kernel_has_kprobes() -> bool:
    """From the kernel itself, not from ovslat: kprobe_events exists only with
    CONFIG_KPROBES (tracefs is mounted by ./dev setup)."""
    return any(
        os.path.exists(f"{t}/kprobe_events")
        for t in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    )


@contextlib.contextmanager
def sysctl(key: str, value: str):
    """A sysctl set for the block, restored after it."""
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path) as f:
        saved = f.read().strip()
    testbed.sysctl(key, value)
    try:
        yield
    finally:
        testbed.sysctl(key, saved)
