"""Make variables reach the scripts as the exact strings given: a run name,
path or sweep value holding a quote, `$(...)`, spaces or a leading `-` is
neither a shell syntax error nor shell code (the Makefile's `arg` function).

Each target is made for real, with PYTHON= a stub that records the command
line it was given, so what is checked is what the script would receive."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Each one broke the recipes that pasted values into '...': a quote ends the
# quoting, $(...) and backquotes run as commands, $$ and # are make's own.
NASTY = [
    "it's",
    "say \"hi\" $(touch PWNED) `touch PWNED2` $HOME $$HOME",
    "two  spaces ",  # (make itself drops the blanks right after VAR=)
    "-x --strict",
    "a#b;c|d&e*",
]

STUB = """#!{python}
import json, os, sys
with open(os.environ["ARGV_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def make(tmp_path):
    """make <target> VAR=value ... with a recording stub for python; returns
    the argument lists the stub was called with."""
    stub = tmp_path / "python"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    log = tmp_path / "argv.jsonl"

    def run(target, **variables):
        log.write_text("")
        command = ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed", f"PYTHON={stub}", target]
        command += [f"{name}={value}" for name, value in variables.items()]
        result = subprocess.run(command, cwd=tmp_path, env={**os.environ, "ARGV_LOG": str(log)},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in log.read_text().splitlines()]

    return run


def after(argv, flag):
    """The value of `flag`, given as one word --flag=VALUE (so a value
    starting with "-" cannot pass for an option)."""
    (value,) = [arg[len(flag) + 1:] for arg in argv if arg.startswith(flag + "=")]
    return value


@pytest.mark.parametrize("value", NASTY)
def test_reproduce_gets_the_run_exactly(make, value, tmp_path):
    (argv,) = make("reproduce", RUN=value)
    assert argv[:2] == ["-m", "scripts.experiments.reproduce"]
    assert argv[-2:] == ["--", value]  # after --: a positional even when it starts with "-"
    assert "--strict" not in argv
    assert not list(tmp_path.glob("PWNED*")) and not list(REPO_ROOT.glob("PWNED*"))


def test_strict_is_a_switch(make):
    (argv,) = make("reproduce", RUN="r", STRICT="1")
    assert argv[2:] == ["--strict", "--", "r"]


@pytest.mark.parametrize("value", NASTY)
def test_sweep_gets_every_value_exactly(make, value):
    (argv,) = make("sweep", SWEEP=value, BASE=value + "b", VARY=value + "v", SEEDS=value + "s", JOBS=value + "j",
                   NAME=value + "n", SWEEPS=value + "r")
    assert [after(argv, flag) for flag in ("--file", "--base", "--vary", "--seeds", "--jobs", "--name", "--root")] \
        == [value, value + "b", value + "v", value + "s", value + "j", value + "n", value + "r"]


def test_sweep_defaults(make):
    (argv,) = make("sweep", BASE="tiny")
    assert after(argv, "--jobs") == "1" and after(argv, "--root") == "sweeps" and after(argv, "--file") == ""


@pytest.mark.parametrize("value", NASTY)
def test_report_and_sample_get_their_values_exactly(make, value):
    (argv,) = make("report", SWEEP_DIR=value, REPORT_DIR=value + "o", BASELINE=value + "b")
    assert [after(argv, flag) for flag in ("--sweep", "--out", "--baseline")] == [value, value + "o", value + "b"]
    (argv,) = make("sample", CKPT=value)
    assert after(argv, "--ckpt") == value


@pytest.mark.parametrize("value", NASTY)
def test_eval_and_wheelhouse_get_their_values_exactly(make, value, tmp_path):
    (argv,) = make("eval", CKPT=value, TASKS=value + "t")
    assert [after(argv, "--ckpt"), after(argv, "--tasks")] == [value, value + "t"]
    stub = tmp_path / "python"  # the fixture's recording python, as the system one here
    (argv,) = make("wheelhouse", SYSTEM_PYTHON=stub, PYTHON_VERSION=value, WHEELHOUSE_ONLY=value + "w")
    assert [after(argv, "--python-version"), after(argv, "--only")] == [value, value + "w"]


def test_report_runs_is_a_list_of_folders(make):
    (argv,) = make("report", RUNS="out/it's  out/$(b) `c`")
    assert argv[argv.index("--runs") + 1:] == ["out/it's", "out/$(b)", "`c`"]
