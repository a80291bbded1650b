"""The man page and bash completion the .deb ships, generated from the
parsers: every subcommand and option is in them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))

import build  # noqa: E402

from ovslat.cli import build_parser  # noqa: E402


def test_man_page_has_every_command_and_option():
    man = build.man_page("0.0")
    assert man.startswith('.TH OVSLAT 1 "" "ovslat 0.0"')
    for name, sp in build._subparsers(build_parser()).items():
        assert f".SS {name}\n" in man
        for a in sp._actions:
            for o in a.option_strings:
                assert o.replace("-", chr(92) + "-") in man, (name, o)


def test_completion_lists_subcommands_and_their_options():
    text = build.completion()
    subs = build._subparsers(build_parser())
    assert " ".join(subs) in text
    assert "--threshold-us" in text.split("    watch)", 1)[1].split(";;", 1)[0]
