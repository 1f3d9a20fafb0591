"""How the command line reports errors: the user's as one line, plstream's own bugs as internal errors with a log."""

from __future__ import annotations

import pytest

from plstream.acquire_adapters import InputError
from plstream.cli import main
from plstream.commands import COMMANDS


def raise_input_error(args):
    raise InputError("movie.tif", "page 3 is truncated")


def raise_a_bug(args):
    return {}["missing key"]


def raise_a_builtin_value_error(args):
    raise ValueError("an internal check failed")


@pytest.fixture
def evaluate_runs(monkeypatch, tmp_path):
    """Make ``plstream evaluate`` run a function of this module; crash logs go to tmp_path."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def use(function_name: str) -> None:
        monkeypatch.setitem(COMMANDS, "evaluate", f"{__name__}:{function_name}")

    return use


def test_a_user_error_is_one_line(evaluate_runs, capsys, tmp_path):
    evaluate_runs("raise_input_error")
    assert main(["evaluate", "r.h5", "t.h5"]) == 1
    err = capsys.readouterr().err
    assert err == "plstream: error: movie.tif: page 3 is truncated\n"
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("function", "shown"), [("raise_a_bug", "KeyError"), ("raise_a_builtin_value_error", "ValueError")]
)
def test_anything_else_is_an_internal_error_with_a_log(evaluate_runs, capsys, tmp_path, function, shown):
    evaluate_runs(function)
    assert main(["evaluate", "r.h5", "t.h5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"plstream: internal error ({shown}") and "this is a bug in plstream" in err
    logs = list((tmp_path / "state" / "plstream").glob("plstream-crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback" in text and function in text and "plstream evaluate r.h5 t.h5" in text


def test_debug_shows_the_traceback(evaluate_runs):
    evaluate_runs("raise_a_bug")
    with pytest.raises(KeyError):
        main(["evaluate", "r.h5", "t.h5", "--debug"])


def test_settings_out_of_range_are_a_user_error(capsys, tmp_path):
    assert main(["simulate", "--out", str(tmp_path / "m.tif"), "--set", "simulation.n_frames=0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("plstream: error: simulation.n_frames = 0 is not allowed: it must be >= 1")
