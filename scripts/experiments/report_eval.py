"""The eval columns of `make report`: each run's best.eval.json (`make eval`
or EVAL_AT_END, gpt2/eval/results.py), one column per eval metric any run
has, mean ± std over the seeds."""

from gpt2.eval.results import read_results
from gpt2.run.checkpoint import BEST

COUNTS = ("_items", "_cropped", "_tokens")  # how much was scored, not a score


def eval_metrics(out_dir):
    """The eval metrics of the run in `out_dir` (its best.eval.json), as
    eval/<name>; counts left out."""
    record = read_results(out_dir / BEST)
    saved = record.get("metrics") if isinstance(record, dict) else None
    if not isinstance(saved, dict):
        return {}
    return {f"eval/{key}": value for key, value in saved.items()
            if isinstance(value, (int, float)) and not key.endswith(COUNTS)}


def eval_columns(groups):
    """The eval metric names the runs have, in order of first appearance."""
    names = {}
    for runs in groups.values():
        for run in runs:
            names.update(dict.fromkeys(k for k in run.metrics if k.startswith("eval/")))
    return list(names)
