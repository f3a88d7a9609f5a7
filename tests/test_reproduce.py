"""scripts/experiments/reproduce.py end to end: a tiny run tracked in Trackio and W&B
(offline), reproduced from each place it is recorded (its name in Trackio,
its W&B offline folder, its out-dir), bit for bit; and the refusals: a name
matching nothing, a name matching several runs (the three reproductions),
an older record without train_args or provenance, --strict against a
record of other code and versions.

The trainings share one module fixture; reproduce runs in-process (its
training is a subprocess, as `make reproduce` runs it).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from tracking_support import REPO_ROOT, journal_points, own_env
from train_support import TINY, shakespeare_flags

from lib.trackers.journal import journal_path, read_journal
from lib.trackers.run_info import git_diff, provenance
from lib.trackers.wandb_records import offline_run_folders
from scripts.experiments.reproduce import main as reproduce

RESULT_KEYS = ("best_val_loss", "final_val_loss", "final_train_loss")
ITERS = 4


def train_command(data_dir, input_path, out_dir):
    """Train run R of project P, tracked in Trackio and W&B, into `out_dir`."""
    flags = [*TINY, *shakespeare_flags(data_dir, input_path), "--tracker", "trackio,wandb", "--tracker-project", "P",
             "--tracker-run-name", "R", "--max-iters", str(ITERS), "--eval-interval", str(ITERS),
             "--out-dir", str(out_dir), "--json-output", str(out_dir / "metrics.json")]
    return [sys.executable, "-m", "gpt2.train", *flags]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, shakespeare_data, shakespeare_path):
    """Run R: 4 iterations, tracked in Trackio and W&B (offline) in folders of its own."""
    root = tmp_path_factory.mktemp("recorded")
    env = {**own_env(), "TRACKIO_DIR": str(root / "trackio"), "WANDB_DIR": str(root)}
    command = train_command(shakespeare_data, shakespeare_path, root / "out")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": root / "out", "trackio": root / "trackio", "wandb": root / "wandb"}


def where(recorded):
    return ["--trackio-dir", str(recorded["trackio"]), "--wandb-dir", str(recorded["wandb"])]


def first_start(out_dir):
    return read_journal(journal_path(out_dir))[0]


def assert_identical(original, repro, output):
    """Same final losses and the same losses at every logged step, exactly."""
    old, new = (json.loads((d / "metrics.json").read_text()) for d in (original, repro))
    assert {k: new[k] for k in RESULT_KEYS} == {k: old[k] for k in RESULT_KEYS}
    old_points, new_points = journal_points(original), journal_points(repro)
    assert new_points["train/loss"] == old_points["train/loss"] and len(old_points["train/loss"]) == ITERS
    assert new_points["val/loss"] == old_points["val/loss"]
    assert "reproduce: identical" in output
    old_start, new_start = first_start(original), first_start(repro)
    assert (new_start["run_name"], new_start["project"], new_start["resumed"]) == ("R-repro", "P", False)
    assert new_start["trackers"] == ["trackio", "wandb"]
    assert new_start["config"]["provenance"]["cpu_matmul"] == old_start["config"]["provenance"]["cpu_matmul"]
    assert new_start["config"]["cpu_matmul"] == old_start["config"]["provenance"]["cpu_matmul"]  # not auto
    assert (repro / ".config").is_file() == (old_start["config"]["dot_config"] is not None)


def test_a_run_records_its_provenance(recorded):
    config = first_start(recorded["out"])["config"]
    prov = config["provenance"]
    assert set(prov["versions"]) == {"python", "torch", "numpy", "trackio", "wandb"} and prov["versions"]["torch"]
    assert (prov["device"], prov["dtype"], prov["compile"], prov["world_size"]) == ("cpu", "float32", False, 1)
    assert prov["cpu_matmul"] in ("blas", "onednn") and config["cpu_matmul"] == "auto"
    assert prov["data"]["tokenizer"] == "gpt2" and len(prov["data"]["tokens_sha256"]) == 64
    assert prov["data"]["source_sha256"] and prov["data"]["train_tokens"] > 0
    assert (prov["git_diff"] is not None) == bool(config["git_dirty"]) and len(prov["run_uid"]) == 32
    assert isinstance(config["data_max_tokens"], int)  # a count, not a credential: not redacted


def test_the_recorded_diff_is_capped_and_redacted(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "a")
    (tmp_path / "a.py").write_text('x = 2\napi_key = "sk-0123456789"\n' + "y = 3\n" * 100)
    (tmp_path / "new.txt").write_text("untracked")
    prov = provenance(tmp_path)
    assert prov["untracked_files"] == ["new.txt"] and prov["git_diff_redacted"] == 1 and not prov["git_diff_cut"]
    assert '+api_key = "<redacted>"' in prov["git_diff"] and "sk-0123456789" not in prov["git_diff"]
    cut = git_diff(tmp_path, limit=200)
    assert cut["git_diff_cut"] and cut["git_diff_bytes"] == len(prov["git_diff"].encode())
    assert cut["git_diff"].endswith(" bytes recorded]\n") and len(cut["git_diff"]) < 300


def start_reproduce(*args):
    """`python -m scripts.experiments.reproduce ARGS` (as make runs it), started."""
    return subprocess.Popen([sys.executable, "-m", "scripts.experiments.reproduce", *args], cwd=REPO_ROOT, env=own_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_reproduce_from_trackio_wandb_and_the_out_dir(recorded, tmp_path, capfd):
    """At the same time: (a) by name, found in Trackio (and W&B: one run);
    (b) from its W&B offline folder; (c) from its out-dir, into the default
    <out-dir>-repro.  Then the three reproductions share the name R-repro:
    a name matching several runs."""
    run_id = first_start(recorded["out"])["backends"]["wandb"]["run_id"]
    (folder,) = [f for f in offline_run_folders(recorded["wandb"]) if f.name.endswith(run_id)]
    sources = {
        tmp_path / "a": (["R", *where(recorded), "--out-dir", str(tmp_path / "a")],
                         f"recorded in trackio {recorded['trackio'] / 'P.db'}, wandb {recorded['wandb']}"),
        tmp_path / "b": ([str(folder), "--out-dir", str(tmp_path / "b")], f"recorded in wandb {recorded['wandb']}"),
        recorded["out"].with_name("out-repro"): ([str(recorded["out"])],
                                                f"recorded in journal {journal_path(recorded['out'])}"),
    }
    procs = {repro: start_reproduce(*args) for repro, (args, _) in sources.items()}
    for repro, proc in procs.items():
        output, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:] + err[-3000:]
        assert sources[repro][1] in output
        assert_identical(recorded["out"], repro, output)

    assert reproduce(["R-repro", *where(recorded)]) == 1
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: 'R-repro' matches 3 runs: R-repro (trackio id ")
    assert err.count("wandb id") == 3 and err.endswith("name one by its id or out-dir")


def test_a_name_matching_nothing(recorded, capfd):
    assert reproduce(["no-such-run", *where(recorded)]) == 1
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: no run 'no-such-run'; looked in the 1 Trackio databases in ")
    assert str(recorded["wandb"]) in err


def edited_journal(recorded, tmp_path, edit):
    """A copy of R's journal whose first record's config went through `edit`."""
    records = read_journal(journal_path(recorded["out"]))
    edit(records[0]["config"])
    out = tmp_path / "old"
    out.mkdir(parents=True)
    journal_path(out).write_text("".join(json.dumps(record) + "\n" for record in records))
    return out


def test_a_record_without_train_args_is_rebuilt_from_its_flags(recorded, tmp_path, capfd):
    full = edited_journal(recorded, tmp_path / "full", lambda config: None)
    older = edited_journal(recorded, tmp_path / "older", lambda config: config.pop("train_args"))
    commands = []
    for out in (full, older):
        assert reproduce([str(out), "--dry-run", "--out-dir", str(tmp_path / "new")]) == 0
        output = capfd.readouterr().out
        commands.append([line for line in output.splitlines() if "would train:" in line])
    assert "notice: the record has no train_args; rebuilds the command line from the recorded flags" in output
    library = first_start(recorded["out"])["config"]["provenance"]["cpu_matmul"]
    assert commands[1] == commands[0] and len(commands[0]) == 1 and f"--cpu-matmul={library} " in commands[0][0]
    assert not (tmp_path / "new").exists()
    assert reproduce([str(older), "--dry-run", "--strict"]) == 1
    assert "1 missing field (above); nothing trained" in capfd.readouterr().err

    oldest = edited_journal(recorded, tmp_path / "oldest", lambda c: [c.pop("train_args"), c.pop("provenance")])
    assert reproduce([str(oldest), "--dry-run"]) == 0
    output = capfd.readouterr().out
    assert "notice: the record has no provenance; no check of package versions" in output
    assert "--cpu-matmul auto as recorded (auto picks by timing" in output and "--cpu-matmul=auto" in output


def test_strict_refuses_other_code_and_versions(recorded, tmp_path, capfd):
    def other_code(config):
        config["git_commit"] = "0" * 40
        config["provenance"]["versions"]["torch"] = "0.0.1"

    old = edited_journal(recorded, tmp_path, other_code)
    assert reproduce([str(old), "--strict"]) == 1
    captured = capfd.readouterr()
    assert f"differs: git commit: the run used {'0' * 40}" in captured.out
    assert "differs: torch version: the run used 0.0.1, here " in captured.out
    assert "--strict" in captured.err and "nothing trained" in captured.err
    assert not old.with_name("old-repro").exists()


@pytest.fixture
def altered(recorded, shakespeare_data, tmp_path):
    """A copy of the run's data with 2 bytes of train.bin changed in place
    (same size), and R's record pointing at it: (record's out-dir, copy)."""
    copy = tmp_path / "data"
    shutil.copytree(shakespeare_data, copy)

    def to_copy(config):
        config["train_args"] = [arg.replace(str(shakespeare_data), str(copy)) for arg in config["train_args"]]

    out = edited_journal(recorded, tmp_path / "run", to_copy)
    train_bin = copy / "shakespeare" / "train.bin"
    with open(train_bin, "r+b") as f:
        f.seek(1000)
        f.write(b"\x01\x02")
    return out, copy / "shakespeare"


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["touched", "mtime kept"])
def test_altered_tokens_are_data_that_differs(altered, tmp_path, capfd, keep_mtime):
    """Every reproduce hashes the token files (meta.json alone would say
    "same data"): STRICT refuses, otherwise a warning names the file."""
    out, folder = altered
    if keep_mtime:  # altered so that size and mtime look untouched
        meta = json.loads((folder / "meta.json").read_text())
        os.utime(folder / "train.bin", ns=(meta["files"]["train.bin"]["mtime_ns"],) * 2)
    assert reproduce([str(out), "--dry-run", "--strict", "--out-dir", str(tmp_path / "new")]) == 1
    captured = capfd.readouterr()
    assert f"differs: data: {folder / 'train.bin'} does not hold the tokens meta.json recorded" in captured.out
    assert "val.bin" not in captured.out and "same commit, changes, data" not in captured.out
    assert "nothing trained" in captured.err
    assert reproduce([str(out), "--dry-run", "--out-dir", str(tmp_path / "new")]) == 0  # a warning only
    assert f"differs: data: {folder / 'train.bin'}" in capfd.readouterr().out


def test_a_run_start_hashes_only_token_files_that_changed(altered, monkeypatch):
    """At a run's start the fingerprint reads meta.json, hashing a token file
    only when its size or mtime are not what meta.json saw."""
    from gpt2.data import integrity, prepare

    _, folder = altered
    recorded = json.loads((folder / "meta.json").read_text())["tokens_sha256"]
    fingerprint = prepare.data_fingerprint(folder)  # touched: hashed, and the real tokens named
    assert fingerprint["tokens_sha256"] != recorded and fingerprint["tokens_altered"] == ["train.bin"]

    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(path.name) or real(path))
    meta = json.loads((folder / "meta.json").read_text())
    os.utime(folder / "train.bin", ns=(meta["files"]["train.bin"]["mtime_ns"],) * 2)
    assert prepare.data_fingerprint(folder)["tokens_sha256"] == recorded and hashed == []
    assert prepare.data_fingerprint(folder, verify=True)["tokens_altered"] == ["train.bin"]
    assert hashed == ["train.bin", "val.bin"]
