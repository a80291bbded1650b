"""User errors: one line on stderr naming the problem and the fix, exit 2,
no traceback. These never reach the kernel, so they need no root."""

import pytest

from ovslat import cli


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: command"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["watch"], "nothing to watch"),
        (["watch", "-i", "eth0", "--interval", "0"], "--interval must be > 0"),
        (["watch", "-i", "eth0", "--interval", "-1"], "--interval must be > 0"),
        (["watch", "-i", "eth0", "--interval", "abc"], "--interval 'abc' is not a number"),
        (["watch", "-i", "eth0", "--duration", "0"], "--duration must be > 0"),
        (["watch", "-i", "eth0", "--src-ip", "1.2.3"], "--src-ip '1.2.3' is not an IP"),
        (["watch", "-i", "eth0", "--dst-ip", "2001:2::/49x"], "the prefix length must be"),
        (["watch", "-i", "eth0", "--protocol", "icmp", "--family", "6"], "no packet can match"),
        (["watch", "-i", "eth0", "--dst-port", "65536"], "--dst-port 65536 is outside 0-65535"),
        (["watch", "-i", "eth0", "--protocol", "gre"], "unknown protocol 'gre'"),
        (["watch", "-i", "eth0", "--attach", "uprobe"], "invalid choice: 'uprobe'"),
        (["watch", "-i", "eth0", "--format", "xml"], "invalid choice: 'xml'"),
        (["watch", "-i", "eth0", "--max-flows", "0"], "--max-flows must be between"),
        (["watch", "-i", "eth0", "--max-flows", "lots"], "--max-flows 'lots' is not an integer"),
        (["watch", "-i", "a", "-i", "b", "--max-ifaces", "1"], "raise it"),
        (["watch", "-i", "eth0", "--max-ifaces", "100000"], "--max-ifaces must be between"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("ovslat: error: ")
    assert message in err


def test_not_root(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr("ovslat.privileges.effective", lambda: 1 << 39)  # CAP_BPF only
    assert cli.main(["watch", "-i", "lo"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "ovslat: error: ovslat loads BPF programs and lacks CAP_PERFMON, CAP_NET_ADMIN, "
        "CAP_SYSLOG: run it as root (sudo), or grant exactly those capabilities "
        "(as ovslat-export.service does: README, Installing)\n"
    )
    assert cli.main(["watch", "-i", "lo@pod1"]) == 2  # another namespace: CAP_SYS_ADMIN too
    assert "CAP_SYSLOG, CAP_SYS_ADMIN: run it" in capsys.readouterr().err


@pytest.mark.parametrize(
    "main, prog",
    [
        ("latency_main", "enqueue_to_iprec_latency"),
        ("threshold_main", "enqueue_to_iprec_latency_threshold"),
    ],
)
def test_seed_commands_end_an_unexpected_error_in_one_line(main, prog, monkeypatch, capsys):
    """The seed-compatible commands end like ovslat's own: one line, no traceback."""
    from ovslat.commands import seedcompat
    from ovslat.engine import session

    class Broken:
        def __init__(self, _options):
            raise RuntimeError("the map went away")

    monkeypatch.setattr(session, "Session", Broken)
    monkeypatch.setattr(seedcompat, "_is_root_enough", lambda: True)
    args = (
        ["--interface", "lo", "--threshold-us", "5"]
        if "threshold" in main
        else ["--interface", "lo"]
    )
    assert getattr(seedcompat, main)(args) == 1
    err = capsys.readouterr().err
    assert err == (
        f"{prog}: error: RuntimeError: the map went away (rerun with --verbose for details)\n"
    )


def test_interface_slots_follow_what_is_found():
    """--max-ifaces unset: room for churn on top of what discovery found, and
    the memory it pins is what README states for a 500-interface node."""
    from ovslat.engine.session import auto_slots, map_bytes, max_hops

    assert auto_slots(2) == 68 and auto_slots(0) == 64
    assert auto_slots(500) == 1064 and max_hops(1064) == 2128 and max_hops(10) == 256
    per_cpu = map_bytes(1064, 10240, 2) - map_bytes(1064, 10240, 1)
    assert round(per_cpu / (1 << 20), 1) == 5.7
    assert round(map_bytes(1064, 10240, 64) / (1 << 20)) == 370
