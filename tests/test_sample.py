"""Text generation: the KV cache against the plain forward pass, `make sample`
(gpt2/sample.py) on checkpoints good and bad, and the samples, gradient
health, memory and alerts a training run logs, read back from Trackio's
SQLite database and W&B's offline run files."""

import re
import sqlite3
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from tracking_support import REPO_ROOT, journal_points, own_env, trackio_rows
from train_support import TINY, shakespeare_flags

from gpt2 import sample
from scripts import sample as sample_script
from gpt2.model.generate import decode, encode_prompt, generate
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.data.tokenizer import EOT_TOKEN
from gpt2.train import main as train_main
from lib.trackers.journal import journal_path, read_journal
from lib.trackers.wandb_records import offline_run_files, read_offline_run, read_table

SMALL = GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32)


def small_model(seed=0):
    torch.manual_seed(seed)
    return GPT(SMALL).eval()


def test_kv_cache_gives_the_tokens_and_logits_of_the_full_forward_pass():
    model = small_model()
    idx = torch.randint(0, 50257, (2, 5))
    with torch.no_grad():
        full, _ = model(torch.cat([idx, idx[:, :3]], dim=1))
        from gpt2.model.gpt import KVCache

        cache = KVCache(SMALL, 2, "cpu")
        first, _ = model(idx, cache=cache)  # the prompt at once
        pieces = [model(idx[:, i : i + 1], cache=cache)[0] for i in range(3)]  # then one token at a time
    assert cache.length == 8
    torch.testing.assert_close(first, full[:, :5], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full[:, 5:], rtol=1e-4, atol=1e-4)
    # Greedy generation past the context (16) with and without the cache:
    # the same tokens up to the context; both keep going after it.
    cached = generate(model, idx, 20, temperature=0)
    plain = generate(model, idx, 20, temperature=0, use_cache=False)
    assert cached.shape == plain.shape == (2, 25)
    assert torch.equal(cached[:, :16], plain[:, :16])


def test_sampling_leaves_the_global_rng_alone_and_top_k_1_is_greedy():
    model = small_model()
    idx = torch.tensor([[EOT_TOKEN]])
    before = torch.get_rng_state()
    drawn = generate(model, idx, 10, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(drawn, generate(model, idx, 10, temperature=0))
    with pytest.raises(ValueError, match="needs a generator"):
        generate(model, idx, 1, temperature=1.0)


def test_prompt_encoding_round_trips_and_an_empty_prompt_starts_a_document():
    assert decode(encode_prompt("ROMEO: speak.")) == "ROMEO: speak."
    assert encode_prompt("") == [EOT_TOKEN]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint as gpt2/train.py writes it (model and model_config are
    what sampling reads), of a small random model."""
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    model = small_model()
    torch.save({"model": model.state_dict(), "model_config": asdict(SMALL), "iter_num": 7}, path)
    return path


def run_sample(capsys, *flags):
    code = sample.main(["--device", "cpu", "--max-new-tokens", "12", *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def samples_of(out):
    return out.split(sample.SEPARATOR + "\n")[:-1]


def test_same_seed_same_text_other_seed_other_text(checkpoint, capsys):
    flags = ("--ckpt", str(checkpoint), "--num-samples", "2", "--temperature", "1.0", "--top-k", "0")
    code, first, err = run_sample(capsys, *flags, "--seed", "1")
    assert code == 0, err
    assert len(samples_of(first)) == 2 and samples_of(first)[0] != samples_of(first)[1]
    assert re.search(r"2 x 12 tokens from \S+best\.pt \(iter 7\) on cpu in [\d.]+ s: [\d,]+ tokens/s", err)
    assert run_sample(capsys, *flags, "--seed", "1")[1] == first
    assert run_sample(capsys, *flags, "--seed", "2")[1] != first


def test_temperature_0_is_greedy_whatever_the_seed(checkpoint, capsys):
    flags = ("--ckpt", str(checkpoint), "--num-samples", "2", "--temperature", "0")
    _, first, _ = run_sample(capsys, *flags, "--seed", "1")
    _, second, _ = run_sample(capsys, *flags, "--seed", "99")
    assert first == second and samples_of(first)[0] == samples_of(first)[1]
    # Without the cache the same greedy text (12 new tokens stay inside the 16-token context).
    assert run_sample(capsys, *flags, "--no-kv-cache")[1] == first


def test_top_k_1_gives_the_greedy_text(checkpoint, capsys):
    greedy = run_sample(capsys, "--ckpt", str(checkpoint), "--temperature", "0", "--num-samples", "1")[1]
    top1 = run_sample(capsys, "--ckpt", str(checkpoint), "--temperature", "1.5", "--top-k", "1", "--num-samples", "1")
    assert top1[1] == greedy


def test_prompt_from_a_file(checkpoint, capsys, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("KING HENRY:\nOnce more unto the breach")
    code, out, err = run_sample(capsys, "--ckpt", str(checkpoint), "--prompt", f"FILE:{prompt}", "--num-samples", "1")
    assert code == 0, err
    assert out.startswith("KING HENRY:\nOnce more unto the breach") and len(out) > len(prompt.read_text()) + 5
    code, _, err = run_sample(capsys, "--ckpt", str(checkpoint), "--prompt", f"FILE:{tmp_path / 'none.txt'}")
    assert code == 1 and re.fullmatch(r"error: --prompt FILE:\S+none\.txt: cannot read it .*\n", err)


@pytest.mark.parametrize(
    "make, message",
    [
        (None, r"error: no checkpoint at \S+; train one with `make train`, or name one with --ckpt \(CKPT=\)"),
        (lambda path, good: path.write_bytes(good.read_bytes()[:3000]),
         r"error: cannot read \S+ \(.*\); it is damaged or not a torch file: .*"),
        (lambda path, good: torch.save({"state_dict": {}}, path),
         r"error: \S+ is not a gpt2lab checkpoint \(no model, model_config\); .*"),
    ],
    ids=["missing", "damaged", "foreign"],
)
def test_bad_checkpoints_are_one_line_and_exit_1(checkpoint, capsys, tmp_path, make, message):
    path = tmp_path / "bad.pt"
    if make:
        make(path, checkpoint)
    code, out, err = run_sample(capsys, "--ckpt", str(path))
    assert code == 1 and out == ""
    assert re.fullmatch(message + r"\n", err), err


def test_make_sample_reads_the_sampling_options_of_dot_config(checkpoint, tmp_path):
    config = tmp_path / ".config"
    config.write_text('CONFIG_SAMPLE_PROMPT="ROMEO:"\nCONFIG_SAMPLE_NUM_SAMPLES=2\nCONFIG_SAMPLE_MAX_NEW_TOKENS=5\n')
    result = subprocess.run(
        ["make", "-s", "sample", f"KCONFIG_CONFIG={config}", f"CKPT={checkpoint}", "ARGS=--device cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False, env=own_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ROMEO:") == 2 and "2 x 5 tokens" in result.stderr


# ----------------------------------------------------------------------------
# What a training run logs


def trackio_alerts(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT title, text, level, step FROM alerts").fetchall()


def tracked_run(shakespeare_data, shakespeare_path, tmp_path, *flags):
    out = tmp_path / "out"
    argv = [
        *TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out),
        "--tracker", "trackio,wandb", "--wandb-offline", "--tracker-project", "P", "--tracker-run-name", "R",
        *flags,
    ]  # fmt: skip
    code = train_main(argv)
    start = read_journal(journal_path(out))[0]
    db = Path(start["backends"]["trackio"]["trackio_dir"]) / "P.db"
    wandb_state = start["backends"]["wandb"]
    (run_file,) = offline_run_files(wandb_state["wandb_dir"], wandb_state["run_id"])
    return code, out, db, run_file


def test_training_logs_samples_grad_norm_memory_and_a_finished_alert(
    shakespeare_data, shakespeare_path, tmp_path, monkeypatch, capsys
):
    returned = []  # what clip_grad_norm_ returned, one per step
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(*args, **kwargs):
        norm = clip(*args, **kwargs)
        returned.append(norm.item())
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    code, out, db, run_file = tracked_run(
        shakespeare_data, shakespeare_path, tmp_path, "--max-iters", "6", "--eval-interval", "3",
        "--sample-interval", "1", "--sample-prompt", "ROMEO:", "--sample-training-tokens", "8",
        "--grad-clip", "0.5", "--log-interval", "2",
    )  # fmt: skip
    assert code == 0
    console = capsys.readouterr().out
    assert len(returned) == 6
    assert re.search(r"^sample 3 \| \d+\.\d\d s \| ROMEO:.+$", console, re.M), console

    # The sample table: rows (step, prompt, text) at steps 0, 3 and 6.
    trackio = trackio_rows(db, "R")
    tables = {step: value["_value"] for step, value in trackio["samples"]}
    assert sorted(tables) == [0, 3, 6]
    for step, rows in tables.items():
        assert [(row["step"], row["prompt"]) for row in rows] == [(step, "ROMEO:")] and rows[0]["text"]
    journaled = [r for r in read_journal(journal_path(out)) if r["kind"] == "table"]
    assert [(r["step"], r["rows"][0][2]) for r in journaled] == [(s, tables[s][0]["text"]) for s in (0, 3, 6)]
    wandb_run = read_offline_run(run_file)
    wandb_tables = {step: read_table(run_file, row["samples"]) for step, row in wandb_run.history if "samples" in row}
    assert {step: table["data"] for step, table in wandb_tables.items()} == {
        step: [[step, "ROMEO:", rows[0]["text"]]] for step, rows in tables.items()
    }
    assert wandb_tables[3]["columns"] == ["step", "prompt", "text"]

    # train/grad_norm: what clipping returned at the last step of each interval.
    for rows in (trackio["train/grad_norm"], journal_points(out)["train/grad_norm"].items()):
        assert [step for step, _ in rows] == [2, 4, 6]
        for step, value in rows:
            assert value == pytest.approx(returned[step - 1], abs=1e-6)
    wandb_norms = [(step, row["train/grad_norm"]) for step, row in wandb_run.history if "train/grad_norm" in row]
    assert wandb_norms == [(s, pytest.approx(returned[s - 1], abs=1e-6)) for s in (2, 4, 6)]
    # clip_fraction: the share of each interval's two steps whose norm was above 0.5.
    expected_fraction = [sum(n > 0.5 for n in returned[s - 2 : s]) / 2 for s in (2, 4, 6)]
    assert [value for _, value in trackio["train/clip_fraction"]] == expected_fraction

    # Peak memory: every interval, and in the summary.
    memory = [value for _, value in trackio["sys/peak_memory_gb"]]
    assert len(memory) == 3 and all(0.05 < value < 64 for value in memory)
    # The summary: the run's peak, the final evaluation's included.
    ((step, peak),) = trackio["summary/peak_memory_gb"]
    assert step == 6 and max(memory) <= peak < 64
    assert wandb_run.summary["peak_memory_gb"] == pytest.approx(peak)

    # The finished-run alert, in both backends and the journal.
    (alert,) = trackio_alerts(db)
    assert alert[0] == "run finished" and alert[2] == "info" and alert[3] == 6 and "best val" in alert[1]
    assert wandb_run.alerts == [{"title": "run finished", "text": alert[1], "level": "INFO"}]
    assert re.search(r"^alert \[INFO\] run finished: 6 iters in .* \| best val \d+\.\d{4} .*$", console, re.M)


def test_a_diverging_run_sends_a_non_finite_loss_alert(shakespeare_data, shakespeare_path, tmp_path, capsys):
    code, out, db, run_file = tracked_run(
        shakespeare_data, shakespeare_path, tmp_path, "--max-iters", "200", "--eval-interval", "200",
        "--optimizer", "sgd", "--learning-rate", "10", "--min-lr", "10", "--warmup-iters", "0", "--grad-clip", "0",
    )  # fmt: skip
    assert code == 1
    title = "training stopped: loss not finite"
    ((text, level),) = [(text, level) for title_, text, level, _ in trackio_alerts(db) if title_ == title]
    assert level == "error"
    assert text.startswith("the training loss is not finite")
    assert {"title": title, "text": text, "level": "ERROR"} in read_offline_run(run_file).alerts
    assert title in [r["title"] for r in read_journal(journal_path(out)) if r["kind"] == "alert"]


def test_samples_and_update_ratios_do_not_change_training(tiny_run_points):
    watched = tiny_run_points("--sample-interval", "1", "--health-interval", "2")
    plain = tiny_run_points("--sample-interval", "0")
    assert watched["train/loss"] == plain["train/loss"] and len(plain["train/loss"]) == 4
    # The update ratios of every layer group, at steps 2 and 4 only.
    groups = {key for key in watched if key.startswith("health/update_ratio/")}
    assert groups == {f"health/update_ratio/{g}" for g in ("embeddings", "block.0", "block.1", "final")}
    for key in groups:
        assert sorted(watched[key]) == [2, 4] and all(0 < v < 1 for v in watched[key].values())
    assert not any(key.startswith("health/") for key in plain)


@pytest.fixture
def tiny_run_points(shakespeare_data, shakespeare_path, tmp_path):
    """Run a short tiny training; returns its journaled {metric: {step: value}}."""
    counter = iter(range(100))

    def run(*flags):
        out = tmp_path / f"out{next(counter)}"
        argv = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out),
                "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--dropout", "0.1", *flags]
        assert train_main(argv) == 0
        return journal_points(out)

    return run


def test_loss_spike_alert(tmp_path):
    from gpt2.run.health import SPIKE_WINDOW, RunHealth

    health = RunHealth(small_model(), torch.device("cpu"), grad_clip=1.0, health_interval=0, loss_spike_factor=2.0)
    assert [health.loss_spike(3.0) for _ in range(SPIKE_WINDOW)] == [None] * SPIKE_WINDOW
    assert health.loss_spike(5.9) is None  # 1.97x the mean of ten 3.0s
    spike = health.loss_spike(7.0)
    assert re.search(r"train loss 7\.0000 is 2\.1x the mean 3\.2900 of the last 10 logged losses", spike)


def test_a_binary_prompt_file_is_one_line(checkpoint, capsys, tmp_path):
    binary = tmp_path / "x.bin"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    code, out, err = run_sample(capsys, "--ckpt", str(checkpoint), "--prompt", f"FILE:{binary}")
    assert code == 1 and out == ""
    assert re.fullmatch(r"error: --prompt FILE:\S+x\.bin: not UTF-8 text .*; give a UTF-8 text file\n", err), err


def test_make_sample_takes_the_checkpoint_from_out_dir(checkpoint, tmp_path, capsys):
    out_dir = tmp_path / "my-run"
    out_dir.mkdir()
    (out_dir / "best.pt").write_bytes(checkpoint.read_bytes())
    config = tmp_path / ".config"
    config.write_text(f'CONFIG_OUT_DIR="{out_dir}"\nCONFIG_SAMPLE_NUM_SAMPLES=1\nCONFIG_SAMPLE_MAX_NEW_TOKENS=3\n')
    make = ["make", "-s", "sample", f"KCONFIG_CONFIG={config}", "ARGS=--device cpu"]
    result = subprocess.run(make, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
                            env=own_env())
    assert result.returncode == 0, result.stderr
    assert f"1 x 3 tokens from {out_dir / 'best.pt'} (iter 7)" in result.stderr
    # CKPT= (scripts/sample.py --ckpt, as the recipe passes it) still wins over OUT_DIR.
    other = tmp_path / "other.pt"
    assert sample_script.main(["--config", str(config), "--ckpt", str(other), "--device", "cpu"]) == 1
    assert capsys.readouterr().err == (
        f"error: no checkpoint at {other}; train one with `make train`, or name one with --ckpt (CKPT=)\n")


class FakeTerminal:
    """stderr as a terminal (or a log file), and a clock that advances
    `tick` seconds per reading."""

    def __init__(self, tty, tick):
        self.tty, self.tick, self.text, self.now = tty, tick, "", 0.0

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def clock(self):
        self.now += self.tick
        return self.now


def sample_on(terminal, monkeypatch, *flags):
    monkeypatch.setattr(sample.sys, "stderr", terminal)
    monkeypatch.setattr(sample.time, "perf_counter", terminal.clock)
    return sample.main(["--device", "cpu", *flags])


@pytest.mark.parametrize("tty", [True, False])
def test_a_long_generation_shows_progress_without_changing_the_text(checkpoint, capsys, monkeypatch, tty):
    flags = ("--ckpt", str(checkpoint), "--num-samples", "1", "--temperature", "1.0", "--seed", "3",
             "--max-new-tokens", "14")
    quick = FakeTerminal(tty, tick=0.001)  # 14 tokens in a few ms: nothing but the summary line
    assert sample_on(quick, monkeypatch, *flags) == 0
    quiet_text = capsys.readouterr().out
    assert quick.text.count("\n") == 1 and quick.text.startswith("1 x 14 tokens from")
    slow = FakeTerminal(tty, tick=1.0)  # a second per token: 14 s in all
    assert sample_on(slow, monkeypatch, *flags) == 0
    assert capsys.readouterr().out == quiet_text  # the same text, progress or not
    progress = re.findall(r"sampling: (\d+)/14 tokens, ([\d,.]+) tokens/s, \d+ s left", slow.text)
    done = [int(count) for count, _ in progress]
    assert done and done[-1] == 14 and done == sorted(done) and done[0] <= 3  # shown after about 2 s
    assert slow.text.endswith("tokens/s\n") and "1 x 14 tokens from" in slow.text.splitlines()[-1]
    if tty:  # one line rewritten in place, cleared before the summary
        assert "\r" in slow.text and slow.text.count("\n") == 1 and len(done) > 8
    else:  # a log file: whole lines, one every 10 s and the last
        assert "\r" not in slow.text and slow.text.count("\n") == len(done) + 1 and 2 <= len(done) <= 3
