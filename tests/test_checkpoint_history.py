"""Checkpoint history: step checkpoints every CKPT_INTERVAL steps, the last
CKPT_KEEP kept (the oldest removed only once the new one is complete);
--resume continues from the latest complete checkpoint, --resume-from from
a chosen one, refused with one line for another model shape; checkpoints
logged as tracker artifacts (W&B offline, Trackio) and resumed from."""

import contextlib
import io
import json
import re
import sqlite3
import subprocess
import sys

import pytest
import torch
from tracking_support import REPO_ROOT, own_env
from train_support import TINY, shakespeare_flags

from gpt2.run import checkpoint as checkpoint_module
from gpt2.run.checkpoint import Checkpointer, load, step_checkpoints
from gpt2.run.state import TrainState
from gpt2.sample import main as sample_main
from gpt2.train import main
from lib.trackers.artifacts import offline_artifacts, resolve_artifact


def flags(data_dir, input_path, out_dir, *more):
    return [*TINY, *shakespeare_flags(data_dir, input_path), "--out-dir", str(out_dir), "--seed", "5",
            "--sample-interval", "0",
            "--eval-interval", "5", "--ckpt-interval", "2", "--ckpt-keep", "2", *more]


def iter_losses(text):
    return {int(n): loss for n, loss in re.findall(r"^iter (\d+) \| loss ([\d.]+)", text, re.M)}


def iter_of(path):
    return load(path, keys=("iter_num",), missing_hint="", damaged_hint="").iter_num


@pytest.fixture(scope="module")
def history(tmp_path_factory, shakespeare_data, shakespeare_path):
    """6 steps, a step checkpoint every 2, the last 2 kept."""
    out = tmp_path_factory.mktemp("history") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(flags(shakespeare_data, shakespeare_path, out, "--max-iters", "6")) == 0
    return out, printed.getvalue()


def test_step_checkpoints_every_interval_keep_the_last_ones(history):
    out, printed = history
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "ckpt-000004.pt", "ckpt-000006.pt", "ckpt.pt"]
    assert [iter_of(p) for p in step_checkpoints(out)] == [4, 6]
    assert iter_of(out / "ckpt.pt") == 6 and iter_of(out / "best.pt") in (5, 6)  # evaluations at 5 and 6
    assert "checkpoint 2 | step checkpoint" in printed and "checkpoint 4 | step checkpoint" in printed
    assert not list(out.glob("*.tmp"))


def test_resume_from_a_chosen_checkpoint_continues_exactly(history, shakespeare_data, shakespeare_path, tmp_path,
                                                          capsys):
    out, printed = history
    again = tmp_path / "again"
    argv = flags(shakespeare_data, shakespeare_path, again, "--max-iters", "6",
                 "--resume-from", str(out / "ckpt-000004.pt"))
    assert main(argv) == 0
    resumed = capsys.readouterr().out
    assert f"resuming from {out / 'ckpt-000004.pt'} at iter 4" in resumed
    assert iter_losses(resumed) == {n: v for n, v in iter_losses(printed).items() if n > 4}
    assert iter_of(again / "ckpt.pt") == 6


def test_resume_takes_the_newest_complete_checkpoint(history, shakespeare_data, shakespeare_path, tmp_path, capsys):
    out, _ = history
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("ckpt-000004.pt", "ckpt-000006.pt"):
        (copy / name).write_bytes((out / name).read_bytes())
    (copy / "ckpt.pt").write_bytes((out / "ckpt.pt").read_bytes()[:1000])  # a damaged latest
    assert main(flags(shakespeare_data, shakespeare_path, copy, "--max-iters", "7", "--resume")) == 0
    printed = capsys.readouterr().out
    assert "resuming from ckpt-000006.pt, the newest complete checkpoint" in printed
    assert f"resuming from {copy / 'ckpt-000006.pt'} at iter 6" in printed and list(iter_losses(printed)) == [7]


def test_resume_from_another_model_shape_is_one_line(history, shakespeare_data, shakespeare_path, tmp_path, capsys):
    out, _ = history
    other = tmp_path / "other"
    argv = flags(shakespeare_data, shakespeare_path, other, "--n-embd", "64", "--resume-from", str(out / "ckpt.pt"))
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error == ("error: --resume-from: the checkpoint was trained with other settings (n_embd 32 -> 64); "
                     "resume with the original flags or start a new --out-dir")
    assert not list(other.glob("*.pt"))
    assert main(flags(shakespeare_data, shakespeare_path, other, "--resume-from", str(tmp_path / "nope.pt"))) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: --resume-from: no checkpoint at {tmp_path / 'nope.pt'}")


class Part:
    def state_dict(self):
        return {"w": torch.zeros(2)}


def test_the_oldest_is_removed_only_after_the_new_one_is_complete(tmp_path, monkeypatch):
    checkpoints = Checkpointer(tmp_path, {"model": Part()}, lambda: {}, keep=2)
    state = TrainState()
    for step in (1, 2):
        state.iter_num = step
        checkpoints.save(state, [], is_best=False, step=True)
    assert [p.name for p in step_checkpoints(tmp_path)] == ["ckpt-000001.pt", "ckpt-000002.pt"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    state.iter_num = 3
    with pytest.raises(OSError):
        checkpoints.save(state, [], is_best=False, step=True)
    assert [p.name for p in step_checkpoints(tmp_path)] == ["ckpt-000001.pt", "ckpt-000002.pt"]
    monkeypatch.undo()
    checkpoints.save(state, [], is_best=False, step=True)
    assert [p.name for p in step_checkpoints(tmp_path)] == ["ckpt-000002.pt", "ckpt-000003.pt"]


# ----------------------------------------------------------------------
# Checkpoints as tracker artifacts (LOG_CHECKPOINTS)


def tracked_command(data_dir, input_path, out_dir, *more):
    return [sys.executable, "-m", "gpt2.train", *TINY, *shakespeare_flags(data_dir, input_path), "--seed", "5",
            "--tracker", "trackio,wandb", "--tracker-project", "P", "--log-checkpoints", "--sample-interval", "0",
            "--out-dir", str(out_dir), "--eval-interval", "2", *more]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, shakespeare_data, shakespeare_path):
    """Run R: 4 steps, a checkpoint (and an artifact version) at 2 and 4."""
    root = tmp_path_factory.mktemp("artifacts")
    env = {**own_env(), "TRACKIO_DIR": str(root / "trackio"), "WANDB_DIR": str(root)}
    command = tracked_command(shakespeare_data, shakespeare_path, root / "out", "--tracker-run-name", "R",
                              "--max-iters", "4")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, env, result.stdout


def test_the_wandb_offline_run_and_trackios_store_hold_the_checkpoint_artifact(artifacts, monkeypatch, capsys):
    root, env, _ = artifacts
    monkeypatch.setenv("WANDB_DIR", str(root))
    versions = offline_artifacts(root / "wandb", "P", "checkpoint-R")
    assert len(versions) == 2 and all(set(contents) == {"ckpt.pt"} for _, contents in versions)
    assert "latest" in versions[-1][0] and any("best" in aliases for aliases, _ in versions)
    assert iter_of(resolve_artifact("wandb:P/checkpoint-R:latest")) == 4
    assert iter_of(resolve_artifact("wandb:P/checkpoint-R:v0")) == 2
    # `make sample` (gpt2/sample.py --ckpt) takes the reference too.
    assert sample_main(["--ckpt", "wandb:P/checkpoint-R:best", "--device", "cpu", "--num-samples", "1",
                        "--max-new-tokens", "3"]) == 0
    assert re.search(r"tokens from \S+ \(iter [24]\)", capsys.readouterr().err)
    # ... and `make export` (scripts/export.py --ckpt).
    from scripts.export import main as export_main

    assert export_main(["--ckpt", "wandb:P/checkpoint-R:latest", "--export-dir", str(root / "export")]) == 0
    assert "| Steps | 4" in (root / "export" / "README.md").read_text()
    db = sqlite3.connect(root / "trackio" / "P.db")
    rows = db.execute("SELECT a.name, v.version, v.manifest FROM artifacts a JOIN artifact_versions v "
                      "ON v.artifact_id = a.id ORDER BY v.version").fetchall()
    assert [(name, version) for name, version, _ in rows] == [("checkpoint-R", 0), ("checkpoint-R", 1)]
    assert all([entry["path"] for entry in json.loads(manifest)] == ["ckpt.pt"] for _, _, manifest in rows)
    aliases = dict(db.execute("SELECT alias, v.version FROM artifact_aliases s JOIN artifact_versions v "
                              "ON v.id = s.artifact_version_id").fetchall())
    assert aliases["latest"] == 1 and aliases["best"] in (0, 1)


def test_a_damaged_wandb_file_is_one_error_line_naming_it(tmp_path, monkeypatch, capsys):
    run = tmp_path / "wandb" / "offline-run-20261202_010203-abc"
    run.mkdir(parents=True)
    (run / "run-abc.wandb").write_bytes(b"not a W&B file at all")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    assert sample_main(["--ckpt", "wandb:P/checkpoint-R:latest", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --ckpt wandb:P/checkpoint-R:latest: ") and "run-abc.wandb" in err[0]


def test_resuming_from_an_artifact_gives_the_same_losses(artifacts, shakespeare_data, shakespeare_path, tmp_path):
    root, env, original = artifacts
    command = tracked_command(shakespeare_data, shakespeare_path, tmp_path / "again", "--tracker-run-name", "R2",
                              "--max-iters", "4", "--resume-from", "trackio:P/checkpoint-R:v0")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at iter 2" in result.stdout
    assert iter_losses(result.stdout) == {n: v for n, v in iter_losses(original).items() if n > 2}
    # A reference that names nothing: one line, nothing written.
    command = tracked_command(shakespeare_data, shakespeare_path, tmp_path / "none", "--max-iters", "4",
                              "--resume-from", "trackio:P/checkpoint-nothing:best")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --resume-from trackio:P/checkpoint-nothing:best: no artifact checkpoint-nothing:best in Trackio "
        f"project P ({root / 'trackio' / 'P.db'})"]
    assert not list((tmp_path / "none").glob("*.pt"))
