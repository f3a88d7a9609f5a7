"""The report's table in the trackers: one sweep-level run beside the runs.

`make sweep` (and `make report ... TRACK=1`) opens, in the trackers and
project the runs used, a run named `<sweep>-report` in the sweep's group:
its config holds the table (every point's aggregated numbers, the baseline,
the best point), its summary the same numbers as `<point>/<number>` keys,
so a dashboard shows the comparison next to the runs.  Its journal lives in
<sweep folder>/report-run/, so writing the report again continues the same
tracker run instead of adding one.  It goes through lib/trackers like any
run: no backend is named here.
"""

import statistics
from pathlib import Path

from lib.trackers import TrackerError, TrackingConfig, journal_state, open_trackers
from lib.trackers.registry import backend_class

NUMBERS = ("best_val_loss", "final_val_loss", "final_train_loss", "tokens_per_sec", "total_training_time",
           "sparsity")
RUN_FOLDER = "report-run"


def point_numbers(runs):
    """{number: value} of one point: the mean (and, for losses, the standard
    deviation) over its seeds, and n."""
    numbers = {"n": len(runs)}
    for key in NUMBERS:
        values = [run.metrics[key] for run in runs if isinstance(run.metrics.get(key), (int, float))]
        if values:
            numbers[f"{key}_mean"] = statistics.fmean(values)
            if key.endswith("loss") and len(values) > 1:
                numbers[f"{key}_std"] = statistics.stdev(values)
    return numbers


def track_report(groups, baseline, best, out):
    """Log the table of `groups` ({point: [Run]}) to the trackers the runs
    used; returns a one-line account, or says why nothing was logged."""
    # The first tracked run says where the runs went (one journal read, usually).
    states = (journal_state(run.out_dir) for runs in groups.values() for run in runs)
    first = next((state for state in states if state and state["backends"]), None)
    if first is None:
        return "report: the runs were not tracked; nothing logged to a tracker"
    names = sorted(first["backends"])
    settings = {name: backend_class(name).settings_from_state(first["backends"][name]) for name in names}
    group = first["group"] or Path(out).name
    tracking = TrackingConfig(",".join(names), first["project"], f"{group}-report", group, settings)
    table = {point: point_numbers(runs) for point, runs in groups.items()}
    run_dir = Path(out) / RUN_FOLDER
    try:
        trackers = open_trackers(tracking, config={"report": table, "baseline": baseline, "best_point": best,
                                                   "report_folder": str(Path(out).resolve())},
                                 out_dir=run_dir, resume_state=journal_state(run_dir))
        with trackers:
            trackers.summary({f"{point}/{key}": value for point, numbers in table.items()
                              for key, value in numbers.items()})
    except TrackerError as err:
        return f"warning: the report was not logged to the trackers ({err})"
    return f"report: logged to {', '.join(names)} as run {tracking.tracker_run_name} (project {first['project']})"
