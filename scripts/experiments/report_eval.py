"""The eval columns of `make report`: each run's best.eval.json (`make eval`
or EVAL_AT_END, gpt2/eval/results.py), one column per eval metric any run
has, mean ± std over the seeds."""

import json

from gpt2.eval.results import results_path
from gpt2.run.checkpoint import BEST

COUNTS = ("_items", "_cropped", "_tokens")  # how much was scored, not a score


def eval_metrics(out_dir):
    """The extra metrics of the run in `out_dir` whose metrics.json is `metrics`."""
    extra = {}
    try:
        saved = json.loads(results_path(out_dir / BEST).read_text())["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        saved = {}
    for key, value in saved.items():
        if isinstance(value, (int, float)) and not key.endswith(COUNTS):
            extra[f"eval/{key}"] = value
    return extra


def eval_columns(groups):
    """The eval metric names the runs have, in order of first appearance."""
    names = {}
    for runs in groups.values():
        for run in runs:
            names.update(dict.fromkeys(k for k in run.metrics if k.startswith("eval/")))
    return list(names)
