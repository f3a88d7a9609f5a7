"""`make bench` in its quick mode: it runs, prints one table and writes JSON
holding every row with its numbers.  Timings are never compared with a
threshold here: a shared CI machine makes them whatever they are."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2.data.tokenizer import default_workers
from scripts.bench.bench import PLANS
from scripts.bench.report import COLUMNS, MONITOR_GOAL, ROW_NUMBERS, SAMPLE_GOAL, evaluate_goals

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_bench(shakespeare_path, tmp_path_factory):
    """(stdout, JSON report) of one `python -m scripts.bench.bench --quick` run."""
    json_path = tmp_path_factory.mktemp("bench") / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.bench.bench", "--quick", "--device", "cpu", "--input", str(shakespeare_path),
         "--json", str(json_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(json_path.read_text())


MONITORS = ("grad norm + clip fraction", "peak memory", "loss-spike check", "update ratios", "text samples")


def expected_rows():
    plan = PLANS["quick"]
    return (
        ["peak: float32 matmul"]
        + [row.name for row in plan.train["cpu"]]
        + ["tracker none", "tracker trackio", "tracker wandb (offline)"]
        + [f"monitor: {name}" for name in MONITORS]
        + ["data: tokenize, 1 process"]
        + ([f"data: tokenize, {default_workers()} processes"] if default_workers() > 1 else [])
    )


def test_every_row_has_every_number_it_promises(quick_bench):
    _, report = quick_bench
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == expected_rows()
    for name, row in rows.items():
        for key in ROW_NUMBERS[row["kind"]]:
            value = row[key]
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, key, value)
    # MFU is achieved FLOP/s over the run's measured peak.
    peak = rows["peak: float32 matmul"]["gflops"]
    assert report["peak_flops"] == pytest.approx(peak * 1e9)
    for row in report["rows"]:
        if row["kind"] in ("train", "tracker"):
            assert row["mfu"] == pytest.approx(row["gflops"] / peak)
    assert rows["tracker none"]["ratio"] == pytest.approx(1.0)
    # The peak is the fastest library's: both were measured each time.
    measurements = rows["peak: float32 matmul"]["measurements"]
    assert all(set(m) == {"blas", "onednn"} for m in measurements)
    assert peak * 1e9 == pytest.approx(max(max(m.values()) for m in measurements))
    assert "BLAS matmuls" in rows["cpu-tiny, BLAS matmuls"]["note"]
    # What seeing inside a run costs: a share of the step, stated in the note.
    for name in MONITORS:
        row = rows[f"monitor: {name}"]
        match = re.match(r"(\d+\.\d{3})% of a ([\d.]+) ms step; ", row["note"])
        assert match, row["note"]
        # The note rounds the step to 0.1 ms: half of that is the tolerance of a short step.
        assert row["share"] == pytest.approx(row["ms_per_iter"] / float(match[2]), rel=max(1e-3, 0.05 / float(match[2])))
        assert 100 * row["share"] == pytest.approx(float(match[1]), abs=1e-3)


def test_the_table_has_a_header_every_row_and_every_column(quick_bench):
    stdout, report = quick_bench
    lines = stdout.splitlines()
    header = lines[0]
    assert header.startswith("gpt2lab bench (quick) | ")
    assert f"torch {report['machine']['torch']}" in header and "cores" in header and "threads" in header
    assert "python -m scripts.bench.bench --quick" in header and re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", header)
    table = [line for line in lines if line.startswith("|")]
    titles = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert titles == ["measurement", *(title for title, _, _ in COLUMNS), "notes"]
    names = [line.strip("|").split("|")[0].strip() for line in table[2:]]
    assert names == expected_rows()
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(titles)
        assert all(re.fullmatch(r"—|[\d,]+(\.\d+)?%?", cell) for cell in cells[1:-1]), line


def test_goals_are_listed_with_what_was_measured_but_not_judged_in_quick_mode(quick_bench):
    stdout, report = quick_bench
    goals = report["goals"]
    assert len(goals) == 10 and all(goal["met"] is None for goal in goals)
    assert goals[0]["measured"].startswith("not run") and goals[9]["measured"].startswith("not run")
    judged_elsewhere = goals[1:9] if default_workers() > 1 else goals[1:8]  # data needs 2 cores
    assert all("not judged" in g["measured"] for g in judged_elsewhere)
    assert [g["goal"].endswith(f"at most {SAMPLE_GOAL if 'samples' in g['goal'] else MONITOR_GOAL:.0%} of the "
                               "step time when on") for g in goals[3:8]] == [True] * 5
    assert stdout.count("- [not measured] ") == 10


def test_a_gpu_row_without_a_known_peak_ran_and_says_so():
    """An unknown GPU's 124M row has no MFU, but it did run: its goal shows
    the speed and why there is no MFU, not "not run"."""
    tracker_none = {"name": "tracker none", "kind": "tracker", "noise": 0.0}
    gpu = {"name": "gpu-gpt2-124M", "kind": "train", "ms_per_iter": 512.0, "tokens_per_sec": 32000.0, "mfu": None}
    measured = evaluate_goals([tracker_none, gpu])[-1]
    assert measured["met"] is None
    assert measured["measured"].startswith("ran (512.0 ms/iter, 32,000 tokens/s); MFU unknown")
    assert evaluate_goals([tracker_none])[-1]["measured"].startswith("not run")


def test_a_missing_corpus_is_one_line_and_exit_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "scripts.bench.bench", "--quick", "--input", str(tmp_path / "missing.txt")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert re.fullmatch(r"error: --input \S+missing\.txt: no such file; .*\n", result.stderr)
