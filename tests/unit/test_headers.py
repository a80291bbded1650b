"""Which header tree bcc is pointed at, on fake trees laid out as Debian,
RHEL and a plain kbuild tree lay them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovslat.engine import headers


def _source(d: Path) -> Path:
    (d / "include" / "linux").mkdir(parents=True)
    (d / headers.KCONFIG_H).write_text("")
    return d


def _build(d: Path, release: str, source: Path | None = None) -> Path:
    (d / "include" / "generated").mkdir(parents=True)
    (d / headers.AUTOCONF_H).write_text("")
    (d / "include" / "config").mkdir()
    (d / "include" / "config" / "kernel.release").write_text(release + "\n")
    if source is not None:
        (d / "Makefile").write_text(f"include {source}/Makefile\n")
    return d


@pytest.fixture
def host(tmp_path):
    src = tmp_path / "usr/src"
    mods = tmp_path / "lib/modules"
    src.mkdir(parents=True)
    mods.mkdir(parents=True)
    return tmp_path, src, mods


def find(host, release="6.18.4-custom", env=None):
    root, src, mods = host
    return headers.find(release, env or {}, mods, (src, src / "kernels"), root / "kheaders")


def _debian_61(src: Path) -> Path:
    """Debian's split 6.1 tree: the -common source half, the -amd64 build half."""
    common = _source(src / "linux-headers-6.1.0-57-common")
    return _build(src / "linux-headers-6.1.0-57-amd64", "6.1.192", common)


def _link_build(mods: Path, release: str, tree: Path) -> None:
    (mods / release).mkdir()
    (mods / release / "build").symlink_to(tree)


def test_running_kernels_own_build_link_is_exact(host):
    _, src, mods = host
    _link_build(mods, "6.1.0-57-amd64", _debian_61(src))
    t = find(host, "6.1.0-57-amd64")
    assert t.how == "exact" and t.exact and t.env() == {} and t.cflags() == []


def test_debian_split_tree_of_another_kernel(host):
    _, src, _ = host
    common = _source(src / "linux-headers-6.1.0-57-common")
    amd64 = _build(src / "linux-headers-6.1.0-57-amd64", "6.1.192", common)
    _build(src / "linux-headers-5.10.0-32-amd64", "5.10.223", None)  # no source half: skipped
    t = find(host)
    assert (t.how, t.exact, t.version) == ("installed", False, "6.1.192")
    assert t.env() == {"BCC_KERNEL_SOURCE": str(common)}
    assert (
        f"-I{amd64}/include" in t.cflags() and f"-I{amd64}/arch/x86/include/generated" in t.cflags()
    )
    assert "uapi headers only" in t.describe() and "BTF" in t.describe()


def test_newest_installed_tree_wins_and_the_running_ones_first(host):
    _, src, _ = host
    for v in ("5.10.0-32", "6.12.117+deb13", "6.1.0-57"):
        common = _source(src / f"linux-headers-{v}-common")
        _build(src / f"linux-headers-{v}-amd64", v, common)
    assert find(host).source.endswith("linux-headers-6.12.117+deb13-common")
    t = find(host, "6.1.0-57-amd64")
    assert t.exact and t.source.endswith("linux-headers-6.1.0-57-common")


def test_rhel_tree_is_one_directory(host):
    _, src, _ = host
    d = _build(_source(src / "kernels" / "5.14.0-427.el9.x86_64"), "5.14.0-427.el9.x86_64")
    t = find(host)
    assert t.source == str(d) and t.cflags() == []  # source and build in one


def test_a_link_to_another_kernels_tree_is_not_exact(host):
    _, src, mods = host
    _link_build(mods, "6.18.4-custom", _debian_61(src))
    t = find(host)
    assert (t.how, t.exact) == ("linked", False) and "BTF" in t.describe()


def test_a_split_trees_source_half_in_the_environment_gets_its_build_half(host):
    """What ovslat sets for bcc, inherited by a process it starts (a test's
    ovslat under pytest): the same flags as when it found the tree itself."""
    _, src, _ = host
    common = _source(src / "linux-headers-6.1.0-57-common")
    amd64 = _build(src / "linux-headers-6.1.0-57-amd64", "6.1.192", common)
    found = find(host)
    again = find(host, env=found.env())
    assert again.how == "environment" and again.build == str(amd64)
    assert again.cflags() == found.cflags() and again.version == "6.1.192"


def test_environment_is_bccs_first_choice_and_checked(host):
    root, src, _ = host
    tree = _source(root / "opt/linux")
    assert find(host, env={"BCC_KERNEL_SOURCE": str(tree)}).how == "environment"
    with pytest.raises(headers.NoHeaders, match="is not a kernel source tree"):
        find(host, env={"BCC_KERNEL_SOURCE": str(root / "nope")})


def test_kheaders_then_one_line_naming_what_to_install(host):
    root, _, _ = host
    with pytest.raises(headers.NoHeaders) as e:
        find(host)
    assert "apt install linux-headers-amd64" in str(e.value) and "\n" not in str(e.value)
    (root / "kheaders").write_bytes(b"")
    assert find(host).how == "kheaders"
