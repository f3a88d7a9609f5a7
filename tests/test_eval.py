"""make eval (gpt2/eval/): HellaSwag scored three ways on a HellaSwag-format
file the test writes, checked against a hand computation and against
lm-evaluation-harness itself on the exported model; whole-split val loss
against per-token losses by hand; bad input as one error line.  No network."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from train_support import TINY, shakespeare_flags

from gpt2.eval import cli, hellaswag, ppl
from gpt2.eval.results import results_path
from gpt2.model.gpt import GPTConfig
from gpt2.run.checkpoint import BEST
from gpt2.train import main as train_main

WORDS = ("the man picks up a ball and throws it across the field while people watch from the side "
         "she opens the box [title] carefully to find [header] a small cat sleeping inside it").split()


def fake_items(count=30, seed=0):
    rng = np.random.default_rng(seed)

    def text(n):
        return " ".join(rng.choice(WORDS, size=n))

    items = []
    for i in range(count):
        ctx_a, ctx_b = text(int(rng.integers(3, 9))), text(int(rng.integers(1, 5)))
        if i == 3:  # longer than the tiny model's 32-token block: cropped from the left
            ctx_a = text(60)
        items.append({"ind": i, "activity_label": text(2), "ctx_a": ctx_a, "ctx_b": ctx_b,
                      "ctx": ctx_a + " " + ctx_b, "endings": [text(int(rng.integers(2, 7))) for _ in range(4)],
                      "label": int(rng.integers(0, 4)), "split": "val", "split_type": "indomain",
                      "source_id": f"fake~{i}"})
    return items


def write_items(path, items):
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shakespeare_data, shakespeare_path):
    out = tmp_path_factory.mktemp("eval-run")
    assert train_main([*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out),
                       "--max-iters", "6", "--eval-interval", "3"]) == 0
    return out / BEST


@pytest.fixture(scope="module")
def model(trained):
    return cli.load_model(trained, torch.device("cpu"))[0]


def hand_logprob(model, context, ending):
    """Sum of log-probs of `ending` after `context`, one row, no batching."""
    row = (context + ending)[-(model.config.block_size + 1):]
    start = len(row) - len(ending)
    with torch.no_grad():
        logits, _ = model(torch.tensor([row[:-1]]))
    logprobs = torch.log_softmax(logits[0].double(), dim=-1)
    return sum(logprobs[t - 1, row[t]].item() for t in range(max(start, 1), len(row))), len(row) - max(start, 1)


def test_scores_equal_a_hand_computation(model):
    items = fake_items(8)
    result = hellaswag.score_items(model, items, block_size=model.config.block_size, device=torch.device("cpu"))
    correct = {name: 0 for name in hellaswag.METRICS}
    for item in items:
        llmc, harness = hellaswag.render_llmc(item), hellaswag.render_harness(item)
        sums, counts = zip(*(hand_logprob(model, llmc.context, e) for e in llmc.endings))
        h_sums = [hand_logprob(model, harness.context, e)[0] for e in harness.endings]
        chars = [len(hellaswag.harness_preprocess(e)) for e in item["endings"]]
        label = item["label"]
        correct["acc"] += int(np.argmax(sums) == label)
        correct["acc_norm_llmc"] += int(np.argmax(np.array(sums) / np.array(counts)) == label)
        correct["acc_harness"] += int(np.argmax(h_sums) == label)
        correct["acc_norm_harness"] += int(np.argmax(np.array(h_sums) / np.array(chars)) == label)
    for name in hellaswag.METRICS:
        assert result[name] == correct[name] / len(items), name
    assert result["items"] == 8 and result["cropped"] == 1


class FixedLogits(torch.nn.Module):
    """A model whose next-token log-probs are one fixed vector at every
    position, so each ending's score is a sum over a table, by hand."""

    def __init__(self, seed=0, block_size=32):
        super().__init__()
        self.config = GPTConfig(block_size=block_size, n_layer=1, n_head=1, n_embd=8)
        self.logits = torch.randn(50304, generator=torch.Generator().manual_seed(seed)) * 3

    def hidden(self, idx):
        return torch.zeros(*idx.shape, 1)

    def lm_head(self, hidden):
        return self.logits.expand(*hidden.shape[:-1], -1)


def test_acc_and_acc_norm_of_a_hand_computed_case():
    model = FixedLogits()
    table = torch.log_softmax(model.logits.double(), dim=0).tolist()
    items = fake_items(40, seed=5)
    expected = {name: 0 for name in hellaswag.METRICS}
    enc = hellaswag.gpt2_encoding()
    for item in items:
        sums = [sum(table[t] for t in enc.encode_ordinary(" " + e)) for e in item["endings"]]
        means = [total / len(enc.encode_ordinary(" " + e)) for total, e in zip(sums, item["endings"])]
        choices = [hellaswag.harness_preprocess(e) for e in item["endings"]]
        query = hellaswag.harness_preprocess(item["activity_label"] + ": " + item["ctx_a"] + " "
                                             + item["ctx_b"].capitalize())
        ctx = enc.encode_ordinary(query)
        h_sums = [sum(table[t] for t in enc.encode_ordinary(query + " " + c)[len(ctx):]) for c in choices]
        label = item["label"]
        expected["acc"] += int(np.argmax(sums) == label)
        expected["acc_norm_llmc"] += int(np.argmax(means) == label)
        expected["acc_harness"] += int(np.argmax(h_sums) == label)
        expected["acc_norm_harness"] += int(np.argmax([h / len(c) for h, c in zip(h_sums, choices)]) == label)
    result = hellaswag.score_items(model, items, block_size=32, device=torch.device("cpu"))
    assert {name: result[name] for name in hellaswag.METRICS} == {k: v / 40 for k, v in expected.items()}
    assert expected["acc"] != expected["acc_norm_llmc"]  # the case tells the two scorings apart
    assert expected["acc_harness"] != expected["acc_norm_harness"]


def test_harness_preprocessing_and_rendering():
    item = {"activity_label": "Cooking", "ctx_a": "Put it in the pan [title] stir it.", "ctx_b": "then",
            "ctx": "x", "endings": ["[step] add salt.", "b", "c", "d"], "label": 0}
    rendered = hellaswag.render_harness(item)
    enc = hellaswag.gpt2_encoding()
    assert enc.decode(rendered.context) == "Cooking: Put it in the pan. stir it. Then"
    # As the harness: strip() comes before the brackets go, so a space is left.
    assert enc.decode(rendered.endings[0]) == "  add salt."
    assert rendered.ending_chars[0] == len(" add salt.")
    assert enc.decode(hellaswag.render_llmc(item).endings[0]) == " [step] add salt."


def test_whole_val_split_loss_is_the_mean_of_every_token(model, tmp_path):
    tokens = np.random.default_rng(1).integers(0, 50257, size=101).astype(np.uint16)  # 100 predicted: 32+32+32+4
    loss, count = ppl.token_loss(model, tokens, model.config.block_size, torch.device("cpu"))
    losses = []
    with torch.no_grad():
        for start in range(0, 100, 32):
            x = torch.tensor(tokens[start:min(start + 32, 100)].astype(np.int64))[None]
            y = torch.tensor(tokens[start + 1:min(start + 33, 101)].astype(np.int64))
            logits, _ = model(x)
            logprobs = torch.log_softmax(logits[0].double(), dim=-1)
            losses += [-logprobs[i, y[i]].item() for i in range(len(y))]
    assert count == 100 == len(losses)
    assert loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_make_eval_writes_json_and_table(trained, shakespeare_data, tmp_path, capsys):
    jsonl = write_items(tmp_path / "hs.jsonl", fake_items(12))
    assert cli.main(["--ckpt", str(trained), "--device", "cpu", "--data-dir", str(shakespeare_data),
                     "--dataset", "shakespeare", "--eval-tasks", "hellaswag,ppl",
                     "--eval-hellaswag-file", str(jsonl)]) == 0
    record = json.loads(results_path(trained).read_text())
    metrics = record["metrics"]
    assert metrics["hellaswag_items"] == 12 and 0 <= metrics["hellaswag_acc_norm_llmc"] <= 1
    val = np.memmap(shakespeare_data / "shakespeare" / "val.bin", dtype=np.uint16, mode="r")
    assert metrics["ppl_val_tokens"] == len(val) - 1
    assert metrics["ppl_val_perplexity"] == pytest.approx(math.exp(metrics["ppl_val_loss"]))
    out = capsys.readouterr().out
    assert "hellaswag_acc_norm_llmc" in out and "hellaswag_acc_norm_harness" in out


@pytest.mark.parametrize("flags, message", [
    (["--ckpt", "{tmp}/none.pt"], "no checkpoint at"),
    (["--ckpt", "{tmp}/bad.pt"], "cannot read"),
    (["--ckpt", "{ckpt}", "--eval-tasks", "mmlu"], "unknown eval task 'mmlu'; the known ones are hellaswag, ppl, harness"),
    (["--ckpt", "{ckpt}", "--eval-tasks", "hellaswag", "--eval-hellaswag-file", "{tmp}/bad.jsonl"],
     "is not a HellaSwag item"),
    (["--ckpt", "{ckpt}", "--eval-tasks", "hellaswag", "--data-dir", "{tmp}/empty"], "cannot download HellaSwag"),
])
def test_bad_input_is_one_error_line(trained, tmp_path, capsys, monkeypatch, flags, message):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.jsonl").write_text('{"ctx": "a"}\n')

    def offline(*args, **kwargs):
        raise hellaswag.urllib.error.URLError("no route to host")

    monkeypatch.setattr(hellaswag.urllib.request, "urlopen", offline)
    argv = [flag.format(tmp=tmp_path, ckpt=trained) for flag in flags]
    before = results_path(trained).read_text() if results_path(trained).exists() else None
    assert cli.main([*argv, "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert (results_path(trained).read_text() if results_path(trained).exists() else None) == before


def test_a_device_torch_cannot_read_is_one_error_line(trained, capsys):
    assert cli.main(["--ckpt", str(trained), "--eval-tasks", "ppl", "--device", "bogus", "--no-trackers"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --device bogus: not a device; use cpu, cuda, cuda:N or auto")


def test_download_is_checked_against_the_authors_sha256(tmp_path, monkeypatch, capsys):
    body = "".join(json.dumps(item) + "\n" for item in fake_items(3)).encode()

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return body

    monkeypatch.setattr(hellaswag.urllib.request, "urlopen", lambda *a, **k: Response())
    # Another file than the authors' (a wrong mirror, a cut download): refused, nothing kept.
    with pytest.raises(hellaswag.HellaSwagError, match=f"not the authors' {hellaswag.SHA256}"):
        hellaswag.locate("", tmp_path)
    assert not any(tmp_path.rglob("*")), list(tmp_path.rglob("*"))
    # The authors' file (here: the fixture, its hash pinned in place of theirs) is cached and read.
    monkeypatch.setattr(hellaswag, "SHA256", hashlib.sha256(body).hexdigest())
    path = hellaswag.locate("", tmp_path)
    assert path == hellaswag.cached_path(tmp_path) and path.read_bytes() == body
    assert len(hellaswag.read_items(path)) == 3
    monkeypatch.setattr(hellaswag.urllib.request, "urlopen", None)  # the cache is read, nothing fetched again
    assert hellaswag.locate("", tmp_path) == path
    path.write_bytes(body[:-10] + b"0123456789")  # damaged in the cache
    with pytest.raises(hellaswag.HellaSwagError, match="damaged; delete it"):
        hellaswag.locate("", tmp_path)


def test_make_eval_shows_hellaswag_progress_and_its_rate(trained, tmp_path, capsys, monkeypatch):
    import functools

    import lib.progress

    # Each clock read a minute after the last: every item is past the delay and the log interval.
    ticks = iter(range(0, 10**6, 60))
    monkeypatch.setattr(hellaswag, "Progress", functools.partial(lib.progress.Progress, clock=lambda: float(next(ticks))))
    jsonl = write_items(tmp_path / "hs.jsonl", fake_items(3))
    assert cli.main(["--ckpt", str(trained), "--eval-tasks", "hellaswag", "--eval-hellaswag-file", str(jsonl),
                     "--device", "cpu", "--no-trackers"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hellaswag:")]
    assert lines[0].startswith("hellaswag: 1/3 items, 0.0167 items/s, 2 min 0 s left, acc_norm_llmc ")
    assert lines[0].endswith(" so far")
    assert len(lines) == 4 and lines[2].startswith("hellaswag: 3/3 items") and " left, acc_norm_llmc " in lines[2]
    assert lines[3].startswith("hellaswag: 3 items in ") and lines[3].endswith(" items/s)")


def test_a_local_file_of_another_hash_is_scored_with_a_notice(tmp_path, capsys):
    subset = write_items(tmp_path / "subset.jsonl", fake_items(4))
    assert hellaswag.locate(str(subset), tmp_path / "data") == subset
    err = capsys.readouterr().err
    assert "notice:" in err and "not the authors'" in err and "scoring its items as given" in err
    assert not (tmp_path / "data").exists()


def test_harness_numbers_equal_the_harness_itself(trained, model, tmp_path):
    pytest.importorskip("lm_eval")
    from gpt2.eval.harness import evaluate_folder
    from gpt2.model.export import export

    items = fake_items(24, seed=3)
    jsonl = write_items(tmp_path / "hs.jsonl", items)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text("from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401\n")
    (tasks / "hellaswag_local.yaml").write_text(
        "task: hellaswag_local\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {jsonl}\n"
        "output_type: multiple_choice\nvalidation_split: validation\n"
        "process_docs: !function utils.process_docs\n"
        'doc_to_text: "{{query}}"\ndoc_to_target: "{{label}}"\ndoc_to_choice: "choices"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    folder, _ = export(trained, tmp_path / "export")
    out = evaluate_folder(folder, ["hellaswag_local"], include_path=str(tasks))
    theirs = out["results"]["hellaswag_local"]
    ours = hellaswag.score_items(model, items, block_size=model.config.block_size, device=torch.device("cpu"))
    assert theirs["acc,none"] == ours["acc_harness"]
    assert theirs["acc_norm,none"] == ours["acc_norm_harness"]


def _score_on_rank(rank, world_size, ckpt, jsonl, port, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model = cli.load_model(ckpt, torch.device("cpu"))[0]

        def all_reduce_sum(tensor):
            dist.all_reduce(tensor)
            return tensor

        result = hellaswag.score_items(model, hellaswag.read_items(jsonl), block_size=model.config.block_size,
                                       device=torch.device("cpu"), rank=rank, world_size=world_size,
                                       all_reduce=all_reduce_sum)
        with open(f"{out}.{rank}", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_one_and_two_processes_give_the_same_numbers(trained, model, tmp_path):
    import socket

    import torch.multiprocessing as mp

    items = fake_items(21, seed=7)  # not a multiple of 2: rank 0 scores one more
    jsonl = write_items(tmp_path / "hs.jsonl", items)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_score_on_rank, args=(2, str(trained), str(jsonl), port, str(tmp_path / "r")), nprocs=2)
    one = hellaswag.score_items(model, items, block_size=model.config.block_size, device=torch.device("cpu"))
    for rank in (0, 1):
        assert json.loads((tmp_path / f"r.{rank}").read_text()) == one


def test_eval_values_land_in_trackio_and_wandb(shakespeare_data, shakespeare_path, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tracking_support import own_env, trackio_rows, wandb_rows

    from lib.trackers.journal import journal_path, read_journal

    jsonl = write_items(tmp_path / "hs.jsonl", fake_items(8))
    out = tmp_path / "out"
    flags = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out),
             "--max-iters", "4", "--eval-interval", "2", "--tracker", "trackio,wandb", "--tracker-project", "P",
             "--tracker-run-name", "R", "--eval-hellaswag-interval", "2", "--eval-hellaswag-file", str(jsonl),
             "--eval-at-end", "--eval-tasks", "hellaswag"]
    flags[flags.index("--tracker") + 1] = "trackio,wandb"  # TINY says none
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "gpt2/train.py", *flags], cwd=repo, capture_output=True, text=True,
                            env=own_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "best.eval.json").read_text())["metrics"]
    start = read_journal(journal_path(out))[0]
    db = Path(start["backends"]["trackio"]["trackio_dir"]) / "P.db"
    wandb_state = start["backends"]["wandb"]
    for points in (trackio_rows(db, "R"), wandb_rows(wandb_state["wandb_dir"], wandb_state["run_id"])):
        # During training: the evaluations at 0 and 4 (every 2nd), then best.pt's eval after the run.
        assert [step for step, _ in points["eval/hellaswag_acc_norm_llmc"]][:2] == [0, 4]
        assert points["eval/hellaswag_items"] == [(5, 8)]
        assert points["eval/hellaswag_acc_norm_harness"][-1] == (5, pytest.approx(saved["hellaswag_acc_norm_harness"]))


def test_report_has_a_column_per_eval_metric_and_perplexity(shakespeare_data, shakespeare_path, tmp_path, capsys):
    import statistics

    from scripts.experiments.report import main as report_main

    jsonl = write_items(tmp_path / "hs.jsonl", fake_items(10))
    best = []
    for seed in (1, 2):  # one point, two seeds: each run ends with its eval (EVAL_AT_END)
        out = tmp_path / "runs" / f"seed-{seed}"
        assert train_main([*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out),
                           "--json-output", str(out / "metrics.json"), "--max-iters", "4", "--eval-interval", "2",
                           "--seed", str(seed), "--tracker-run-name", f"tiny,seed={seed}", "--eval-at-end",
                           "--eval-tasks", "hellaswag", "--eval-hellaswag-file", str(jsonl)]) == 0
        best.append((json.loads((out / "metrics.json").read_text())["best_val_loss"],
                     json.loads((out / "best.eval.json").read_text())["metrics"]["hellaswag_acc_norm_llmc"]))
    assert report_main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    lines = [line for line in (tmp_path / "report" / "report.md").read_text().splitlines() if line.startswith("| ")]
    header, row = ([c.strip() for c in line.strip("|").split(" | ")] for line in (lines[0], lines[1]))
    cells = dict(zip(header, row))
    ppl = [math.exp(loss) for loss, _ in best]
    assert cells["best val perplexity"] == f"{statistics.fmean(ppl):.2f} ± {statistics.stdev(ppl):.2f} (n=2)"
    acc = [a for _, a in best]
    assert cells["hellaswag acc norm llmc"] == f"{statistics.fmean(acc):.4f} ± {statistics.stdev(acc):.4f} (n=2)"
    assert "hellaswag acc norm harness" in cells


def test_harness_not_installed_says_how_to_install(trained, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)  # import lm_eval raises ImportError
    assert cli.main(["--ckpt", str(trained), "--device", "cpu", "--eval-tasks", "harness"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: lm-evaluation-harness is not installed; install it with") and "[eval]" in err[-1]
