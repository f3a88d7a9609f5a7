"""scripts/experiments/report.py on real runs: 2 points (adamw, sgd) x 2 seeds of a
6-iteration model, trained once for the module, laid out as a sweep."""

import csv
import json
import re
import shutil
import statistics

import pytest

from gpt2.train import main as train_main
from scripts.experiments.report import main as report_main
from train_support import shakespeare_flags

POINTS = ("optimizer=adamw", "optimizer=sgd")
SEEDS = (1, 2)
FLAGS = [
    "--device", "cpu", "--dtype", "float32", "--no-compile", "--tracker", "none",
    "--model", "custom", "--n-layer", "1", "--n-head", "1", "--n-embd", "16",
    "--block-size", "16", "--batch-size", "2", "--max-iters", "6", "--eval-interval", "3",
    "--eval-iters", "1", "--log-interval", "2", "--warmup-iters", "1",
]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("val_loss_vs_iter", "val_loss_vs_tokens", "train_loss_vs_iter", "lr_vs_iter", "val_loss_delta_vs_iter")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shakespeare_data, shakespeare_path):
    """A sweep folder as `make sweep` lays it out, with its 4 finished runs."""
    folder = tmp_path_factory.mktemp("sweeps") / "optim"
    runs = []
    for point in POINTS:
        optimizer = point.split("=")[1]
        for seed in SEEDS:
            rel = f"{point}/seed-{seed}"
            out = folder / rel
            argv = [*FLAGS, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out),
                    "--json-output", str(out / "metrics.json"), "--optimizer", optimizer, "--seed", str(seed),
                    "--tracker-run-name", f"{point},seed={seed}"]  # fmt: skip
            assert train_main(argv) == 0
            runs.append({"point": point, "seed": seed, "dir": rel, "assignments": {"OPTIMIZER": optimizer}})
    spec = {"name": "optim", "base": "gpt2-tiny-shakespeare", "grid": {"OPTIMIZER": ["adamw", "sgd"]},
            "seeds": list(SEEDS), "runs": runs}  # fmt: skip
    (folder / "sweep.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


def metrics_of(folder, point):
    return [json.loads((folder / point / f"seed-{s}" / "metrics.json").read_text()) for s in SEEDS]


def table_rows(md):
    """{point label: [cells]} of report.md's table."""
    rows = {}
    for line in md.splitlines():
        if line.startswith("| optimizer="):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def mean_std_n(cell):
    mean, rest = cell.split(" ± ")
    std, n = rest.split(" (n=")
    return float(mean), float(std), int(n.rstrip(")"))


def copy_runs(src, dst):
    """The journals, metrics and sweep.json of a sweep (no checkpoints, no report)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pt", "*.png", "report.*"))
    return dst


def check_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0, path


@pytest.fixture(scope="module")
def sweep_report(sweep):
    assert report_main(["--sweep", str(sweep)]) == 0
    return sweep


def test_sweep_report_table(sweep_report, capsys):
    md = (sweep_report / "report.md").read_text(encoding="utf-8")
    best_means = {p: statistics.fmean(m["best_val_loss"] for m in metrics_of(sweep_report, p)) for p in POINTS}
    best = min(best_means, key=best_means.get)
    rows = table_rows(md)
    assert sorted(rows) == sorted(p + (" ★ best" if p == best else "") for p in POINTS)
    assert "Δ best val vs optimizer=adamw" in md and "4 decimals" in md
    for label, cells in rows.items():
        point = label.removesuffix(" ★ best")
        metrics = metrics_of(sweep_report, point)
        for column, key in ((1, "best_val_loss"), (2, "final_val_loss")):
            values = [m[key] for m in metrics]
            assert mean_std_n(cells[column]) == (
                round(statistics.fmean(values), 4), round(statistics.stdev(values), 4), len(SEEDS)
            )
        assert float(cells[3]) == round(statistics.fmean(m["final_train_loss"] for m in metrics), 4)
        assert cells[6] == f"{statistics.fmean(m['total_training_time'] for m in metrics):.1f}"
        delta = best_means[point] - best_means["optimizer=adamw"]
        assert cells[8] == ("baseline" if point == "optimizer=adamw" else f"{delta:+.4f}")
    assert "sweep `optim`" in md and all(f"({name}.png)" in md for name in PLOTS)


def test_sweep_report_csv_is_metrics_json_exactly(sweep_report):
    with open(sweep_report / "report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["point"], int(r["seed"])) for r in rows] == [(p, s) for p in POINTS for s in SEEDS]
    for row in rows:
        metrics = json.loads((sweep_report / row["point"] / f"seed-{row['seed']}" / "metrics.json").read_text())
        assert row["run_name"] == f"{row['point']},seed={row['seed']}"
        for key, value in metrics.items():
            assert row[key] == repr(value) and type(value)(row[key]) == value, (key, row[key], value)
        assert 0 < float(row["mfu"]) < 1  # the CPU's peak FLOPS are known


def test_sweep_report_plots(sweep_report):
    for name in PLOTS:
        check_png(sweep_report / f"{name}.png")
    assert not (sweep_report / "sparsity_vs_iter.png").exists()  # no run prunes
    assert not list(sweep_report.glob(".*.tmp"))


def test_runs_mode_groups_seeds_and_skips_unfinished(sweep, tmp_path, capsys):
    unfinished = tmp_path / "killed"
    unfinished.mkdir()
    lines = (sweep / POINTS[0] / "seed-1" / "tracking.jsonl").read_text().splitlines()
    (unfinished / "tracking.jsonl").write_text("\n".join(lines[:-2]) + "\n")  # no summary, no finish
    out = tmp_path / "report"
    capsys.readouterr()
    assert report_main(["--runs", str(sweep), str(unfinished), "--out", str(out), "--baseline", "optimizer=sgd"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "skipped 1 unfinished" in captured.err and str(unfinished) in captured.err
    assert "| optimizer=sgd" in captured.out and "report in" in captured.out
    assert str(out / "report.md") in captured.out
    rows = table_rows((out / "report.md").read_text(encoding="utf-8"))
    assert len(rows) == 2 and all(mean_std_n(cells[1])[2] == 2 for cells in rows.values())
    assert [cells[8] for label, cells in rows.items() if label.startswith("optimizer=sgd")] == ["baseline"]
    with open(out / "report.csv", newline="", encoding="utf-8") as f:
        rows = sorted((r["point"], r["seed"]) for r in csv.DictReader(f))
    assert rows == [(p, str(s)) for p in POINTS for s in SEEDS]


def test_sparsity_plot_when_a_run_prunes(sweep, tmp_path):
    from scripts.experiments.report import group_points, sweep_inputs
    from scripts.experiments.report_plots import write_plots

    runs, _, _ = sweep_inputs(sweep)
    runs[-1].config["pruning_method"] = "magnitude"
    written = write_plots(group_points(runs), tmp_path, POINTS[0])
    assert [p.stem for p in written] == [*PLOTS[:4], "sparsity_vs_iter", "val_loss_delta_vs_iter"]
    check_png(tmp_path / "sparsity_vs_iter.png")


def damage_journal(folder):
    journal = folder / POINTS[1] / "seed-2" / "tracking.jsonl"
    lines = journal.read_text().splitlines()
    lines[1] = lines[1][:20]
    journal.write_text("\n".join(lines) + "\n")
    return f"{journal}:2: not a JSON record"


@pytest.mark.parametrize("case", ["missing", "missing-runs", "no-sweep-json", "no-runs", "empty-runs",
                                  "baseline", "damaged", "no-out", "nothing"])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(case, sweep, tmp_path, capsys):
    bad, out = tmp_path / "bad", tmp_path / "out"
    argv, expected = ["--sweep", str(bad)], None
    if case == "missing":
        expected = f"no such sweep folder: {bad}"
    elif case == "missing-runs":
        argv, expected = ["--runs", str(bad), "--out", str(out)], f"no such run folder: {bad}"
    elif case == "no-sweep-json":
        bad.mkdir()
        expected = f"{bad / 'sweep.json'} not found"
    elif case == "no-runs":  # sweep.json written, no run finished yet
        bad.mkdir()
        shutil.copy(sweep / "sweep.json", bad)
        expected = f"no finished runs in {bad}: a run has tracking.jsonl and metrics.json; run `make sweep` first"
    elif case == "empty-runs":
        bad.mkdir()
        argv, expected = ["--runs", str(bad), "--out", str(out)], f"no finished runs in {bad}"
    elif case == "baseline":
        copy_runs(sweep, bad)
        argv.extend(["--baseline", "optimizer=adam"])
        expected = "unknown --baseline 'optimizer=adam'; the points are: optimizer=adamw, optimizer=sgd"
    elif case == "damaged":
        expected = damage_journal(copy_runs(sweep, bad))
    elif case == "no-out":
        argv, expected = ["--runs", str(sweep)], "--out is required with --runs"
    elif case == "nothing":
        argv, expected = [], "nothing to report: give --sweep DIR"
    before = sorted(p.name for p in bad.iterdir()) if bad.exists() else None
    capsys.readouterr()
    assert report_main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {expected}") and captured.err.count("\n") == 1, captured.err
    assert captured.out == ""
    assert (sorted(p.name for p in bad.iterdir()) if bad.exists() else None) == before
    assert not out.exists()


def test_an_mfu_above_100_percent_is_never_reported(sweep, tmp_path):
    """Runs logged by code that divided by an underestimated peak (MFU 138%):
    their MFU is n/a in report.md and empty in report.csv, never a number
    that is not true."""
    folder = copy_runs(sweep, tmp_path / "sweep")
    for seed in SEEDS:
        journal = folder / POINTS[1] / f"seed-{seed}" / "tracking.jsonl"
        journal.write_text(re.sub(r'"train/mfu": ?[0-9.e-]+', '"train/mfu": 1.3795', journal.read_text()))
    assert report_main(["--sweep", str(folder)]) == 0
    md = (folder / "report.md").read_text(encoding="utf-8")
    rows = {label.removesuffix(" ★ best"): cells for label, cells in table_rows(md).items()}
    assert rows[POINTS[1]][5] == "n/a" and rows[POINTS[0]][5].endswith("%")
    assert all(float(p) <= 100 for p in re.findall(r"([\d.]+)%", md))
    assert "above 100%" in md  # the note says why
    with open(folder / "report.csv", newline="", encoding="utf-8") as f:
        mfus = {(r["point"], r["seed"]): r["mfu"] for r in csv.DictReader(f)}
    assert [mfus[(POINTS[1], str(s))] for s in SEEDS] == ["", ""]
    assert all(0 < float(mfus[(POINTS[0], str(s))]) <= 1 for s in SEEDS)


@pytest.mark.parametrize("loss", ["best", "final"])
def test_val_perplexity_columns_are_exp_of_each_runs_val_loss(sweep_report, loss):
    import math

    md = (sweep_report / "report.md").read_text(encoding="utf-8")
    header = [c.strip() for c in next(line for line in md.splitlines() if line.startswith("| point")).strip("|").split(" | ")]
    column = header.index(f"{loss} val perplexity")
    for label, cells in table_rows(md).items():
        perplexities = [math.exp(m[f"{loss}_val_loss"]) for m in metrics_of(sweep_report, label.removesuffix(" ★ best"))]
        assert cells[column] == f"{statistics.fmean(perplexities):.2f} ± {statistics.stdev(perplexities):.2f} (n=2)"


def test_best_and_final_val_perplexity_are_each_from_their_own_loss(sweep):
    """These short runs end at their best, so best = final there: here the
    best losses are made to differ, and each column must follow its own."""
    import math

    from scripts.experiments.report import group_points, sweep_inputs, table

    runs, _, _ = sweep_inputs(sweep)
    for i, run in enumerate(runs):
        run.metrics["best_val_loss"] = run.metrics["final_val_loss"] - 0.1 * (i + 1)
    groups = group_points(runs)
    md = table(groups, POINTS[0])
    header = [c.strip() for c in md.splitlines()[0].strip("|").split(" | ")]
    for label, cells in table_rows(md).items():
        for loss in ("best", "final"):
            values = [math.exp(r.metrics[f"{loss}_val_loss"]) for r in groups[label.removesuffix(" ★ best")]]
            assert cells[header.index(f"{loss} val perplexity")] == (
                f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (n=2)")


def test_layer_sparsity_plot_when_runs_logged_per_layer_sparsity(sweep, tmp_path):
    from scripts.experiments.report import group_points, sweep_inputs
    from scripts.experiments.report_plots import final_layer_sparsity, write_plots

    runs, _, _ = sweep_inputs(sweep)
    last = max(runs[-1].points)
    runs[-1].points[last].update({"sparsity/transformer.h.0.attn.c_attn": 0.35, "sparsity/transformer.h.0.mlp.c_fc": 0.65})
    assert final_layer_sparsity(runs[-1]) == {"transformer.h.0.attn.c_attn": 0.35, "transformer.h.0.mlp.c_fc": 0.65}
    assert final_layer_sparsity(runs[0]) == {}
    written = write_plots(group_points(runs), tmp_path, POINTS[0])
    assert [p.stem for p in written] == [*PLOTS, "layer_sparsity"]  # no run prunes by its config
    check_png(tmp_path / "layer_sparsity.png")


def test_delta_plot_pairs_each_run_with_the_baseline_run_of_its_seed(sweep):
    from scripts.experiments.report import group_points, sweep_inputs
    from scripts.experiments.report_plots import paired_delta

    groups = group_points(sweep_inputs(sweep)[0])
    xs, means, lows, highs = paired_delta(groups[POINTS[1]], groups[POINTS[0]], "val/loss")
    # The last evaluation is each run's final val loss (metrics.json).
    deltas = [m["final_val_loss"] - b["final_val_loss"] for m, b in zip(metrics_of(sweep, POINTS[1]),
                                                                         metrics_of(sweep, POINTS[0]))]
    assert means[-1] == pytest.approx(statistics.fmean(deltas), abs=1e-12)
    assert (lows[-1], highs[-1]) == pytest.approx((min(deltas), max(deltas)), abs=1e-12)
    assert xs[0] == 0 and means[0] == 0.0  # iteration 0: the same seed, the same initial model
