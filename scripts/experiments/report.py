"""Compare finished training runs: one table row per point (its seeds
aggregated), one CSV row per run, and plots of the curves.

    python -m scripts.experiments.report --sweep sweeps/optim             # a folder made by `make sweep`
    python -m scripts.experiments.report --runs out/a out/b --out report/  # any out-dirs of gpt2/train.py

A run is an out-dir holding tracking.jsonl (the journal) and metrics.json
(written at the end).  A sweep's points and seeds come from its sweep.json;
with --runs each run is a point named by its run name, and runs whose names
differ only in a trailing `,seed=N` are seeds of one point.  Writes, each
file atomically, into --out (default: the sweep folder): report.md,
report.csv and the PNG plots of scripts/experiments/report_plots.py.  The final numbers
are metrics.json's own: report.csv holds their exact repr, report.md the
means over seeds rounded to 4 decimals (losses).
"""

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpt2.run.batch_size import recorded_tokens_per_iter
from lib.atomic import write_text_atomically
from lib.trackers.journal import journal_path, journaled_points, read_journal
from lib.errors import UserError
from scripts.experiments.report_eval import eval_columns, eval_metrics

METRICS_NAME = "metrics.json"
SWEEP_NAME = "sweep.json"
SEED_SUFFIX = re.compile(r",seed=(\d+)$")
NO_RUNS = "no finished runs in {}: a run has tracking.jsonl and metrics.json; run `make sweep` first"


class ReportError(UserError):
    """A problem with the inputs, reported as one `error:` line."""


@dataclass
class Run:
    out_dir: Path
    point: str
    seed: object
    run_name: str
    config: dict
    metrics: dict  # metrics.json, as written
    points: dict = field(default_factory=dict)  # journaled_points: {step: {metric: value}}

    @property
    def mfu(self):
        """Mean of the logged train/mfu; None when none was logged (no known
        peak FLOPS) or one is above 1.0: achieved over peak cannot be, so
        that run divided by an underestimated peak (code before the peak
        was raised to what a run achieves) and none of its MFUs is true."""
        values = [m["train/mfu"] for m in self.points.values() if m.get("train/mfu") is not None]
        return statistics.fmean(values) if values and max(values) <= 1.0 else None

    @property
    def tokens_per_iter(self):
        """Tokens per iteration (None for a journal without these settings)."""
        return recorded_tokens_per_iter(self.config)


# ----------------------------------------------------------------------------
# Reading runs


def load_run(out_dir):
    """The finished run in `out_dir`, or None when it is unfinished (no
    journal, no metrics.json, or a session started after the last summary)."""
    out_dir = Path(out_dir)
    journal, metrics_file = journal_path(out_dir), out_dir / METRICS_NAME
    if not journal.is_file() or not metrics_file.is_file():
        return None
    try:
        records = read_journal(journal)
        points = journaled_points(records)
        starts = [i for i, r in enumerate(records) if r["kind"] == "start"]
    except (OSError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        why = f"{type(e).__name__}: {e}"
        raise ReportError(f"{journal}: cannot be read ({why}); not a journal of gpt2/train.py") from None
    except ValueError as e:  # read_journal's message names the damaged line
        raise ReportError(str(e)) from None
    if not starts:
        raise ReportError(f"{journal}: no start record; not a journal of gpt2/train.py")
    if not any(r["kind"] == "summary" for r in records[starts[-1] :]):
        return None
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{metrics_file}: cannot be read ({e})") from None
    if not isinstance(metrics, dict):
        raise ReportError(f"{metrics_file}: not a JSON object of metrics")
    start = records[starts[-1]]
    config = start.get("config") or {}
    metrics = {**metrics, **eval_metrics(out_dir)}  # best.eval.json (make eval, EVAL_AT_END)
    return Run(out_dir, "", config.get("seed"), start.get("run_name") or out_dir.name, config, metrics, points)


def _collect(candidates):
    """Load (out_dir, point, seed) candidates: (finished runs, unfinished dirs)."""
    runs, unfinished = [], []
    for out_dir, point, seed in candidates:
        run = load_run(out_dir)
        if run is None:
            unfinished.append(out_dir)
            continue
        run.point = point if point is not None else SEED_SUFFIX.sub("", run.run_name)
        if seed is not None:
            run.seed = seed
        runs.append(run)
    return runs, unfinished


def sweep_inputs(folder):
    """(runs, unfinished dirs, description) of a sweep folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"no such sweep folder: {folder}")
    spec_file = folder / SWEEP_NAME
    if not spec_file.is_file():
        raise ReportError(f"{spec_file} not found: --sweep takes a folder written by `make sweep` "
                          "(--runs takes any out-dirs)")  # fmt: skip
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        candidates = [(folder / r["dir"], str(r["point"]), r.get("seed")) for r in spec["runs"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"{spec_file}: cannot be read ({type(e).__name__}: {e})") from None
    runs, unfinished = _collect(candidates)
    if not runs:
        raise ReportError(NO_RUNS.format(folder))
    return runs, unfinished, _describe_sweep(spec, folder)


def _describe_sweep(spec, folder):
    """"sweep `optim` in `sweeps/optim` (base `gpt2`, OPTIMIZER: adamw, sgd; seeds 1, 2)"."""
    listed = lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
    grid = spec.get("grid")
    grid = "; ".join(f"{k}: {listed(v)}" for k, v in grid.items()) if isinstance(grid, dict) and grid else "no grid"
    seeds = spec.get("seeds")
    seeds = f"{seeds} seeds" if isinstance(seeds, int) else f"seeds {listed(seeds)}"
    return f"sweep `{spec.get('name', folder.name)}` in `{folder}` (base `{spec.get('base', '?')}`, {grid}; {seeds})"


def runs_inputs(dirs):
    """(runs, unfinished dirs, description) of out-dirs; a folder that is not
    a run itself is searched for runs (folders holding tracking.jsonl)."""
    candidates, seen = [], set()
    for d in map(Path, dirs):
        if not d.is_dir():
            raise ReportError(f"no such run folder: {d}")
        found = [d] if journal_path(d).is_file() else sorted(j.parent for j in d.rglob(journal_path("").name))
        for out_dir in found:
            if out_dir.resolve() not in seen:
                seen.add(out_dir.resolve())
                candidates.append((out_dir, None, None))
    runs, unfinished = _collect(candidates)
    if not runs:
        raise ReportError(NO_RUNS.format(", ".join(map(str, dirs))))
    return runs, unfinished, "runs " + ", ".join(f"`{d}`" for d in dirs)


def group_points(runs):
    """{point: [runs]} in order of first appearance."""
    groups = {}
    for run in runs:
        groups.setdefault(run.point, []).append(run)
    return groups


# ----------------------------------------------------------------------------
# The tables


def _values(runs, key):
    values = [r.metrics.get(key) if key != "mfu" else r.mfu for r in runs]
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _mean(runs, key):
    values = _values(runs, key)
    return statistics.fmean(values) if values else None


def _spread(runs, key, digits=4, transform=None):
    """'mean ± std (n=N)' of the runs' `key` (after `transform`), losses to
    4 decimals; std is the sample standard deviation."""
    values = [transform(v) for v in _values(runs, key)] if transform else _values(runs, key)
    if not values:
        return "n/a"
    std = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.{digits}f}{std} (n={len(values)})"


def _fmt(value, pattern):
    return "n/a" if value is None else pattern.format(value)


def perplexity(runs, loss):
    """'mean ± std (n=N)' of exp(`loss`) over the runs (`loss`: best_val_loss
    or final_val_loss; AdamWPrune reports the final one), 2 decimals."""
    return _spread(runs, loss, 2, lambda v: math.exp(min(v, 700.0)))  # exp overflows past 709


def best_point(groups):
    """The point with the lowest mean best val loss (None if no point has one)."""
    means = {p: _mean(runs, "best_val_loss") for p, runs in groups.items()}
    ranked = [p for p in means if means[p] is not None]
    return min(ranked, key=lambda p: means[p]) if ranked else None


def table(groups, baseline):
    """The markdown table: one row per point."""
    best, base_mean = best_point(groups), _mean(groups[baseline], "best_val_loss")
    header = [
        "point", "best val loss", "final val loss", "final train loss", "tokens/s", "MFU",
        "wall time (s)", "final sparsity", f"Δ best val vs {baseline}", "best val perplexity",
        "final val perplexity",
    ]  # fmt: skip
    evals = eval_columns(groups)
    header += [name.removeprefix("eval/").replace("_", " ") for name in evals]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for point, runs in groups.items():
        mean = _mean(runs, "best_val_loss")
        if point == baseline:
            delta = "baseline"
        elif mean is None or base_mean is None:
            delta = "n/a"
        else:
            delta = f"{mean - base_mean:+.4f}"
        label = point.replace("|", "\\|") + (" ★ best" if point == best else "")
        cells = [
            label,
            _spread(runs, "best_val_loss"),
            _spread(runs, "final_val_loss"),
            _fmt(_mean(runs, "final_train_loss"), "{:.4f}"),
            _fmt(_mean(runs, "tokens_per_sec"), "{:,.0f}"),
            _fmt(_mean(runs, "mfu"), "{:.2%}"),
            _fmt(_mean(runs, "total_training_time"), "{:.1f}"),
            _fmt(_mean(runs, "sparsity"), "{:.4f}"),
            delta,
            perplexity(runs, "best_val_loss"),
            perplexity(runs, "final_val_loss"),
            *(_spread(runs, name) for name in evals),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(groups, baseline, described, unfinished, plots):
    runs = sum(len(r) for r in groups.values())
    lines = [
        "# Training report",
        "",
        f"Inputs: {described}: {runs} finished runs in {len(groups)} points."
        + (f" Skipped {len(unfinished)} unfinished: {', '.join(f'`{d}`' for d in unfinished)}." if unfinished else ""),
        "",
        "Losses to 4 decimals: mean ± sample standard deviation over the seeds (n: the seeds counted); "
        "the other columns are means over the seeds. MFU: the mean of the logged train/mfu (n/a where the "
        "device's peak FLOPS are unknown, or where a run logged an MFU above 100%, which only an "
        f"underestimated peak gives). ★ marks the lowest mean best val loss; Δ is a point's mean best "
        f"val loss minus the baseline's ({baseline}); best and final val perplexity: exp of each run's best "
        "and final val loss, then mean ± std. Every run's exact numbers: report.csv.",
        "",
        table(groups, baseline),
        "",
        "Plots (one line per point, the mean over its seeds; shaded: min..max over the seeds): "
        + ", ".join(f"[{p.stem}]({p.name})" for p in plots),
        "",
        *(f"![{p.stem}]({p.name})" for p in plots),
    ]
    return "\n".join(lines) + "\n"


def csv_text(groups):
    """One row per run; each float exactly as metrics.json holds it (its repr)."""
    runs = [r for rs in groups.values() for r in rs]
    keys = list(dict.fromkeys(k for r in runs for k in r.metrics))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["point", "seed", "run_name", "out_dir", *keys, "mfu"])
    cell = lambda v: "" if v is None else repr(v) if isinstance(v, float) else str(v)  # noqa: E731
    for r in runs:
        metrics = [cell(r.metrics.get(k)) for k in keys]
        writer.writerow([r.point, cell(r.seed), r.run_name, str(r.out_dir), *metrics, cell(r.mfu)])
    return out.getvalue()


# ----------------------------------------------------------------------------
# Command line


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m scripts.experiments.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--sweep", metavar="DIR", help="a sweep folder (its sweep.json names the runs and points)")
    source.add_argument("--runs", metavar="DIR", nargs="+", help="out-dirs of runs, or folders holding them")
    parser.add_argument("--baseline", metavar="POINT",
                        help="the point the Δ column compares with (default: the first)")
    parser.add_argument("--out", metavar="DIR",
                        help="where the report goes (default: the sweep folder; required with --runs)")  # fmt: skip
    parser.add_argument("--track", action="store_true",
                        help="also log the table to the trackers the runs used (scripts/experiments/report_tracking.py)")
    return parser.parse_args(argv)


def report(args):
    """Read, check, then write; returns the paths written."""
    if not args.sweep and not args.runs:
        raise ReportError("nothing to report: give --sweep DIR (make report SWEEP_DIR=...) or --runs DIR... --out DIR")
    if args.runs and not args.out:
        raise ReportError("--out is required with --runs: the folder for report.md, report.csv and the plots")
    runs, unfinished, described = sweep_inputs(args.sweep) if args.sweep else runs_inputs(args.runs)
    groups = group_points(runs)
    baseline = args.baseline if args.baseline is not None else next(iter(groups))
    if baseline not in groups:
        raise ReportError(f"unknown --baseline {baseline!r}; the points are: {', '.join(groups)}")
    if unfinished:
        print(f"skipped {len(unfinished)} unfinished runs (no metrics.json or summary yet): "
              + ", ".join(map(str, unfinished)), file=sys.stderr)  # fmt: skip
    from scripts.experiments.report_plots import write_plots  # matplotlib only once the inputs are good

    out = Path(args.out or args.sweep)
    plots = write_plots(groups, out, baseline)
    write_text_atomically(out / "report.csv", csv_text(groups))
    write_text_atomically(out / "report.md", markdown(groups, baseline, described, unfinished, plots))
    print(table(groups, baseline))
    if args.track:
        from scripts.experiments.report_tracking import track_report

        print(track_report(groups, baseline, best_point(groups), out))
    return [out / "report.md", out / "report.csv", *plots]


def main(argv=None):
    """Exit status 0; 1 after a problem with the inputs (one `error:` line, nothing written)."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        written = report(args)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("wrote " + " ".join(map(str, written)))
    print(f"report in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
