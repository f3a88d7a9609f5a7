"""Start-up measurements that pick a number or a code path are taken once per
machine (gpt2/cpu/machine_profile.py): the CPU peak is the best of several
rounds, so a busy start-up cannot push MFU over 100%, and an MFU above 100%
is never logged without a warning; `--cpu-matmul auto` never flips between
runs, and a resumed run computes through the library its checkpoint
recorded, whatever the timing says now."""

import json
import os
import re

import pytest
import torch
from train_support import TINY, shakespeare_flags

from gpt2.cpu import matmul as cpu_matmul
from gpt2.cpu import machine_profile
from gpt2.run.checkpoint import load_checkpoint
from gpt2.cpu.peak import cpu_matmul_flops
from gpt2.run.mfu import Peak, model_flops_utilization
from gpt2.train import main

IDLE = {"blas": 100e9, "onednn": 200e9}


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """An empty user cache folder for this test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def keep_profile(flops):
    """Write `flops` as this machine's kept profile, as a run would."""
    machine_profile.cpu_matmul_profile(lambda: dict(flops), log=print)


def test_a_busy_round_does_not_lower_the_peak():
    # Another process takes the CPU for the first rounds: they read a third.
    busy_rounds = {"blas": [1 / 3, 1 / 3, 1.0, 1 / 3, 1.0], "onednn": [1 / 3, 1.0, 1 / 3, 1 / 3, 1 / 3]}

    def measure(seconds, size, backend):
        return IDLE[backend] * busy_rounds[backend].pop(0)

    assert cpu_matmul_flops(rounds=5, measure=measure) == IDLE


def test_the_peak_is_measured_once_per_machine_and_kept(cache_home):
    calls = []

    def measure():
        calls.append(1)
        return dict(IDLE)

    assert machine_profile.cpu_matmul_profile(measure) == IDLE
    assert machine_profile.cpu_matmul_profile(lambda: {"blas": 1.0}) == IDLE  # a later, busy start
    assert calls == [1]
    kept = json.loads((cache_home / "gpt2lab" / "machine.json").read_text())
    (key,) = kept
    assert f"torch {torch.__version__}" in key and machine_profile.cpu_model() in key
    assert kept[key]["cpu_matmul_flops"] == IDLE


def test_a_damaged_cache_is_measured_over(cache_home):
    path = cache_home / "gpt2lab" / "machine.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert machine_profile.cpu_matmul_profile(lambda: dict(IDLE)) == IDLE
    assert json.loads(path.read_text())[machine_profile.machine_key()]["cpu_matmul_flops"] == IDLE


@pytest.fixture
def argv_into(shakespeare_data, shakespeare_path, tmp_path):
    """The tiny run's arguments, writing into tmp_path/<name> and <name>.json."""

    def argv(name):
        return [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(tmp_path / name),
                "--json-output", str(tmp_path / f"{name}.json"), "--dropout", "0.1", "--seed", "3",
                "--eval-interval", "3", "--lr-decay-iters", "6"]  # fmt: skip

    return argv


@pytest.fixture
def tiny_argv(argv_into):
    return argv_into("out")


def logged_mfus(out_dir):
    """Every train/mfu of the run's journal (what the trackers were sent)."""
    records = [json.loads(line) for line in (out_dir / "tracking.jsonl").read_text().splitlines()]
    return [r["metrics"]["train/mfu"] for r in records if "train/mfu" in (r.get("metrics") or {})]


def test_an_underestimated_peak_is_raised_never_exceeded(cache_home, tiny_argv, tmp_path, capsys):
    """The kept peak of a start-up on a very busy machine, 1 MFLOP/s: the run
    achieves more, so that is the peak (said once, kept), every MFU shown
    and logged is at most 100%, and the next start measures again."""
    keep_profile({"blas": 1e6, "onednn": 1e6})
    assert main([*tiny_argv, "--max-iters", "3", "--tracker", "none"]) == 0
    out = capsys.readouterr().out
    mfus = [float(m) for m in re.findall(r"\| mfu ([\d.]+)% \|", out)]
    assert len(mfus) == 3 and max(mfus) <= 100 and mfus[0] == 100
    assert "above 100%" not in out
    notices = [line for line in out.splitlines() if "above the peak" in line]
    assert len(notices) == 1, out  # once, at the first one
    assert notices[0].startswith("notice: this run achieves ") and "above the peak of 0.001 GFLOP/s" in notices[0]
    assert str(cache_home / "gpt2lab" / "machine.json") in notices[0]
    logged = logged_mfus(tmp_path / "out")
    assert len(logged) == 3 and max(logged) <= 1.0
    kept = json.loads((cache_home / "gpt2lab" / "machine.json").read_text())[machine_profile.machine_key()]
    assert kept["observed_peak_flops"] > 1e6 and kept["contradicted"] is True

    calls = []  # the next start: the cached figure was contradicted, so it is measured again
    flops = machine_profile.cpu_matmul_profile(lambda: calls.append(1) or {"blas": 3e6, "onednn": 0.5e6})
    assert calls == [1] and flops == {"blas": 3e6, "onednn": 1e6}  # the highest of each ever seen
    assert machine_profile.cpu_matmul_profile(lambda: calls.append(1) or {}) == flops and calls == [1]
    assert machine_profile.kept_peak() == kept["observed_peak_flops"]  # never lowered


def test_the_machine_key_names_what_decides_the_peak(monkeypatch, tmp_path):
    """Two virtual machines that both say "AMD EPYC", one with AVX-512: two
    keys; and the core count."""
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(machine_profile, "CPUINFO", str(cpuinfo))
    keys = []
    for flags in ("fpu sse2 avx avx2 fma", "fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_tile amx_bf16"):
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n")
        keys.append(machine_profile.machine_key())
    assert keys[0] != keys[1]
    assert "avx2" in keys[0] and "avx512f" not in keys[0]
    assert "avx512f" in keys[1] and "avx512_bf16" in keys[1] and "amx" in keys[1]
    assert f"{os.cpu_count()} cores" in keys[0] and keys[0].startswith("AMD EPYC | ")


def test_an_honest_peak_gives_no_warning(cache_home, tiny_argv, capsys):
    assert main([*tiny_argv, "--max-iters", "2"]) == 0  # measures this machine, keeps it
    out = capsys.readouterr().out
    assert "warning" not in out
    assert all(float(m) <= 100 for m in re.findall(r"\| mfu ([\d.]+)% \|", out))
    assert (cache_home / "gpt2lab" / "machine.json").is_file()


def test_mfu_is_achieved_over_peak():
    assert model_flops_utilization(1e6, 2e4, 1e11) == pytest.approx(0.2)


def test_a_peak_is_raised_to_what_is_achieved_and_says_so_once():
    lines, kept = [], []
    peak = Peak(1e9, "of the data sheet", lines.append, kept.append)  # 1 GFLOP/s per rank
    assert peak.utilization(1e3, 4e5, world_size=2) == pytest.approx(0.2)  # 0.2 GFLOP/s per rank
    assert peak.utilization(1e3, 4e6, world_size=2) == 1.0 and peak.flops == 2e9  # 2 GFLOP/s: the new peak
    assert peak.utilization(1e3, 8e6, world_size=2) == 1.0 and peak.utilization(1e3, 4e6, world_size=2) == 0.5
    assert lines == ["notice: this run achieves 2 GFLOP/s, above the peak of 1 GFLOP/s of the data sheet: "
                     "that is the peak from now on"]
    assert kept == [2e9, 4e9]


needs_onednn = pytest.mark.skipif(not cpu_matmul.available(), reason="this PyTorch has no oneDNN matmuls")


@needs_onednn
def test_auto_takes_the_kept_choice_not_a_new_timing(cache_home, tiny_argv, capsys):
    keep_profile({"blas": 100e9, "onednn": 130e9})  # oneDNN clearly faster (over MIN_SPEEDUP)
    assert main([*tiny_argv, "--max-iters", "1"]) == 0
    assert "oneDNN matmuls" in capsys.readouterr().out


@needs_onednn
def test_a_resumed_run_keeps_the_recorded_matmul_library(cache_home, argv_into, tmp_path, capsys):
    """The first session's machine favoured oneDNN; at the resume it favours
    BLAS: the resumed run still computes through oneDNN, and ends with the
    losses of an uninterrupted oneDNN run."""
    keep_profile({"blas": 100e9, "onednn": 200e9})
    uninterrupted, tiny_argv = argv_into("uninterrupted"), argv_into("out")
    assert main([*uninterrupted, "--max-iters", "6"]) == 0
    assert main([*tiny_argv, "--max-iters", "3"]) == 0
    assert load_checkpoint(tmp_path / "out")["cpu_matmul"] == "onednn"
    capsys.readouterr()

    (cache_home / "gpt2lab" / "machine.json").unlink()
    keep_profile({"blas": 200e9, "onednn": 100e9})  # timing now favours BLAS
    assert main([*tiny_argv, "--max-iters", "6", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "notice: --resume: oneDNN matmuls, as the checkpoint's run (auto would take BLAS here)" in out
    assert "| cpu float32, oneDNN matmuls |" in out
    assert re.search(r"^done: .* \| oneDNN matmuls$", out, re.M)
    assert load_checkpoint(tmp_path / "out")["cpu_matmul"] == "onednn"
    resumed = json.loads((tmp_path / "out.json").read_text())
    expected = json.loads((tmp_path / "uninterrupted.json").read_text())
    assert resumed["final_val_loss"] == expected["final_val_loss"]
    assert resumed["final_train_loss"] == expected["final_train_loss"]

    # Without a recorded choice (a new run), the kept timing decides: BLAS.
    assert main([*uninterrupted, "--max-iters", "1"]) == 0
    assert re.search(r"^done: .* \| BLAS matmuls$", capsys.readouterr().out, re.M)
