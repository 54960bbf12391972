"""Issue 18: every date and time argument of every command is read by one parser; a bad one is
one line naming the argument and the accepted forms, exit status 2, before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import report_lines

from stockstock.cli import COMMANDS, DATE_OPTIONS, build_parser, main

BAD = ["2011-02-30", "2026-13-01", "tomorrow"]
OPTIONS = sorted((cmd, f"--{opt}") for cmd in COMMANDS for opt in DATE_OPTIONS
                 if f"--{opt}" in build_parser()._subparsers._group_actions[0]
                 .choices[cmd].format_help())
TABLE: list[str] = []
POSITIONAL = {"db": ["upgrade"], "sweep": ["grid.yaml"]}  # need an argument before the options


def _one_line(capsys, argv: list[str], named: str) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), (argv, code, out, err)
    assert err.count("\n") == 1 and err.startswith(f"stockstock {argv[0]}: "), err
    assert f"{named}: '" in err and (" is not a date YYYY-MM-DD (" in err or
                                     " is not an instant with a zone" in err), err
    TABLE.append(f"{' '.join(argv):<42} exit {code}  {len(err.rstrip())} chars")
    return err


def test_the_date_options_are_the_expected_ones():
    assert OPTIONS == [("backtest", "--end"), ("backtest", "--start"), ("market", "--at"),
                       ("seed", "--since"), ("seed", "--until"), ("train", "--cutoff")]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("cmd,option", OPTIONS)
def test_a_bad_date_option_is_one_line_exit_2(home: Path, capsys, cmd, option, bad):
    _one_line(capsys, [cmd, option, bad], option)
    assert not (home / "data").exists()                   # refused before anything ran


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_refuses_a_bad_as_of(home: Path, capsys, cmd, bad):
    _one_line(capsys, [cmd, *POSITIONAL.get(cmd, []), "-p", f"as_of={bad}"], "as_of")


def test_zz_table(request):
    report_lines(request, ["command × bad date (stderr one line):", *TABLE])
