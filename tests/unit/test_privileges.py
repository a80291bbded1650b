"""The capability check every command makes: parsed from /proc/self/status
lines as the kernel writes them."""

from __future__ import annotations

from ovslat import privileges as p


def _mask(*names: str) -> int:
    m = 0
    for n in names:
        m |= 1 << p.ALL[n][0]
    return m


def test_effective_mask_from_status(tmp_path):
    f = tmp_path / "status"
    f.write_text("Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n")
    assert p.effective(str(f)) == _mask("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN")


def test_what_is_missing_is_named_in_one_line():
    assert p.problem(mask=_mask(*p.REQUIRED)) is None
    why = p.problem(mask=_mask("CAP_BPF", "CAP_PERFMON"))
    assert why is not None and "\n" not in why
    assert "lacks CAP_NET_ADMIN, CAP_SYSLOG:" in why and "ovslat-export.service" in why
    # another namespace also needs setns
    assert "CAP_SYS_ADMIN" in (p.problem(other_netns=True, mask=_mask(*p.REQUIRED)) or "")


def test_the_unit_grants_exactly_what_ovslat_asks_for():
    from pathlib import Path

    unit = (Path(__file__).resolve().parents[2] / "packaging/ovslat-export.service").read_text()
    lines = dict(ln.split("=", 1) for ln in unit.splitlines() if "=" in ln and ln[0] != "#")
    assert set(lines["AmbientCapabilities"].split()) == set(p.ALL)
    assert lines["CapabilityBoundingSet"] == lines["AmbientCapabilities"]
