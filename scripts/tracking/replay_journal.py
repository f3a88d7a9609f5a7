"""Replay a run's tracking journal (<out-dir>/tracking.jsonl) into a tracker.

Every metric and summary of a training run is journaled before any tracker
sees it.  When a tracker failed mid-run (train.py prints this command), or
the run was not tracked at all, this writes the journaled points into the
same project and run: Trackio gets every (metric, step) it lacks, gaps
included; W&B history only grows, so it gets the steps after the last one
the run holds.  Points already there are never written twice, so running it
again changes nothing.  By default it replays into the trackers that failed,
else into the trackers the run used.
"""

import argparse
import dataclasses
import sys

from lib.trackers.base import TrackerError
from lib.trackers.journal import journal_path, journaled_points, read_journal
from lib.trackers.registry import backend_class, backend_module, backend_names, parse_tracker_names


def journaled_run(records):
    """(last start record, {step: metrics}, last summary record or None)."""
    starts = [record for record in records if record["kind"] == "start"]
    if not starts:
        raise TrackerError("the journal has no start record; it was not written by open_trackers()")
    summaries = [record for record in records if record["kind"] == "summary"]
    return starts[-1], journaled_points(records), summaries[-1] if summaries else None


def replay_targets(records, start, requested):
    """Tracker names to replay into: --tracker, else the failed ones, else the run's."""
    if requested:
        return parse_tracker_names(requested)
    failed = [record["tracker"] for record in records if record["kind"] == "failed"]
    targets = list(dict.fromkeys(failed)) or start["trackers"]
    if not targets:
        raise TrackerError("the run used no tracker; name one with --tracker trackio or --tracker wandb")
    return targets


def add_backend_settings(parser):
    """One flag per setting of every backend (its Config's fields: --trackio-dir,
    --wandb-offline, ...), each overriding the run's saved value when given."""
    for name in backend_names():
        group = parser.add_argument_group(f"{name} settings (default: the run's own)")
        for field in dataclasses.fields(backend_module(name).Config):
            flag = "--" + field.name.replace("_", "-")
            if field.type in (bool, "bool"):
                group.add_argument(flag, action="store_true", default=None)
            else:
                group.add_argument(flag, default=None)


def backend_settings(backend, state, args):
    """The backend's settings from the run's saved state, with the settings
    given on this command line (--trackio-dir, --wandb-offline) on top."""
    settings = backend.settings_from_state(state)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(settings, **given)


def replay(name, records, start, points, summary, args):
    """Write the journaled points into one backend; return a one-line report."""
    states = [
        record["backends"][name] for record in records if record["kind"] == "start" and name in record["backends"]
    ]
    state = states[-1] if states else {}
    backend = backend_class(name)
    tracker = backend(
        project=start["project"],
        run_name=start["run_name"],
        group=start.get("group", ""),
        config=start["config"],
        settings=backend_settings(backend, state, args),
        resume_state=state,
    )
    for step, metrics in points.items():
        tracker.log(metrics, step)
    if summary is not None:
        tracker.summary(summary["metrics"], summary["step"])
    tracker.finish()
    total = sum(len(metrics) for metrics in points.values())
    added = tracker.points_sent
    return (
        f"replay: {name} run {start['run_name']} of project {start['project']}: "
        f"added {added} points, {total - min(added, total)} of {total} journaled points were already there or cannot be added"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="the run's --out-dir (holding tracking.jsonl)")
    parser.add_argument("--tracker", default="",
                        help=f"{', '.join(backend_names())} or a comma list (default: see above)")
    add_backend_settings(parser)
    args = parser.parse_args(argv)

    path = journal_path(args.out_dir)
    if not path.is_file():
        print(f"error: no journal at {path}; pass the --out-dir the run was trained with", file=sys.stderr)
        return 1
    try:
        records = read_journal(path)
        start, points, summary = journaled_run(records)
        for name in replay_targets(records, start, args.tracker):
            print(replay(name, records, start, points, summary, args))
    except (TrackerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
