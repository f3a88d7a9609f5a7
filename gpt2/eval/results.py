"""Where eval results go: one JSON beside the checkpoint (atomic; tasks run
later are merged in), a console table, and the checkpoint's own tracker run
(summary values, eval/<metric> points and an "eval/results" table)."""

import json
import math
from pathlib import Path

from lib.atomic import write_text_atomically


def results_path(checkpoint_path):
    """out/best.pt -> out/best.eval.json"""
    path = Path(checkpoint_path)
    return path.with_name(path.stem + ".eval.json")


def read_results(checkpoint_path):
    path = results_path(checkpoint_path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_results(checkpoint_path, iter_num, metrics, extra=None):
    """Merge `metrics` into the checkpoint's JSON and write it atomically."""
    record = read_results(checkpoint_path)
    record["checkpoint"] = str(checkpoint_path)
    record["iter_num"] = iter_num
    record.setdefault("metrics", {}).update(metrics)
    for key, value in (extra or {}).items():
        record[key] = value
    path = results_path(checkpoint_path)
    write_text_atomically(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def table_text(metrics):
    width = max(len(name) for name in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ----------"]
    for name, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


def log_to_trackers(checkpoint, metrics):
    """The metrics into the tracker run that wrote `checkpoint` (the same
    project, run and ids: its saved resume state).  Returns the backends'
    names; none when the run was untracked."""
    saved = checkpoint.trackers
    args = checkpoint.args
    if not saved or not args.get("tracker"):
        return []
    from lib.trackers import TrackingConfig
    from lib.trackers.registry import open_trackers

    trackers = open_trackers(TrackingConfig.from_flags(args), config=args, out_dir=str(checkpoint.path.parent),
                             resume_state=saved)
    try:
        # After the run's last point: W&B's history only takes steps past it.
        at = max(checkpoint.iter_num or 0, saved.get("last_step") or 0) + 1
        finite = {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        trackers.log(finite, step=at)
        trackers.summary(finite)
        trackers.table("eval/results", ["metric", "value"], [[k, v] for k, v in finite.items()], step=at)
        return trackers.names
    finally:
        trackers.finish()


def print_table(metrics):
    print(table_text(metrics), flush=True)
