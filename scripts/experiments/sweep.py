"""Run a sweep: every point of a grid of Kconfig options, for each seed, then
the report (`make sweep`; the format is in scripts/experiments/sweep_plan.py).

    make sweep SWEEP=sweeps/optimizers.sweep
    make sweep BASE=gpt2-tiny-shakespeare VARY="OPTIMIZER=adamw,adamwspam" SEEDS=2 [JOBS=2]

Everything is checked first: each point's .config goes through the same
strict loader as `make train`.  Each run then gets its own folder,
sweeps/<name>/<point>/seed-<seed>/, holding its .config, train.args and
command.sh, one self-contained command (what a SLURM array task runs), and
what training writes there (checkpoints, tracking.jsonl, metrics.json,
train.log).  Runs are tagged in the trackers: group = the sweep's name, run
name = '<point>,seed=<seed>'.

Run it again after an interruption (Ctrl-C, kill -9, a reboot): finished
runs (metrics.json present) are skipped, a run that was cut is resumed
(--resume: from its checkpoint, or, stopped before its first checkpoint,
from step 0 in the same tracker run), so nothing trains twice and no tracker
holds a step twice.  JOBS=N runs N at once: one GPU each when there are
GPUs, otherwise the CPU threads split between them.
"""

import argparse
import contextlib
import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lib.atomic import replaced_atomically, write_text_atomically
from lib.kconfig import REPO_ROOT, ConfigError
from scripts.genconfig import render
from scripts.experiments.sweep_plan import check, override, parse_command_line, parse_file, point_config

FINISHED = "metrics.json"  # written by train.py (--json-output) once the run is complete
LOG = "train.log"
COMMAND = "command.sh"


@dataclass(frozen=True)
class PlannedRun:
    point: str  # label: 'optimizer=adamwspam'
    seed: int
    folder: Path
    assignments: dict

    @property
    def name(self):
        return f"{self.point},seed={self.seed}"

    @property
    def finished(self):
        return (self.folder / FINISHED).is_file()


def plan(sweep, root, extra_args):
    """Check the whole sweep and write each run's folder (.config, train.args,
    command.sh) and sweep.json; returns the runs.  Nothing is written unless
    every point is valid."""
    check(sweep)
    folder = Path(root) / sweep.name
    identity = {"name": sweep.name, "base": sweep.base, "grid": sweep.grid, "seeds": sweep.seeds,
                "extra_args": list(extra_args)}
    _refuse_other_sweep(folder, identity)
    configs, runs = {}, []
    for point in sweep.points():
        kconf = point_config(sweep, point)  # raises on the first invalid point
        label = sweep.label(point)
        texts = render(kconf)
        first_seed = kconf.syms["SEED"].str_value
        configs[label] = (kconf, texts)
        for offset in range(sweep.seeds):
            seed = int(first_seed) + offset
            runs.append(PlannedRun(label, seed, folder / label / f"seed-{seed}", point))
    for run in runs:
        kconf, texts = configs[run.point]
        run.folder.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(run.folder / ".config") as tmp:
            kconf.write_config(str(tmp), header=f"# sweep {sweep.name}, point {run.point}\n", save_old=False)
        write_text_atomically(run.folder / "train.args", texts["train.args"])
        write_text_atomically(run.folder / COMMAND, command_script(sweep.name, run, extra_args))
        (run.folder / COMMAND).chmod(0o755)
    record = dict(identity, source=sweep.source, varied=sweep.varied,
                  runs=[{"point": r.point, "seed": r.seed, "dir": str(r.folder.relative_to(folder)),
                         "assignments": r.assignments, "run_name": r.name} for r in runs])
    write_text_atomically(folder / "sweep.json", json.dumps(record, indent=2) + "\n")
    return folder, runs


def _refuse_other_sweep(folder, identity):
    path = folder / "sweep.json"
    if not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read it ({err}); move the folder away or choose another NAME=") from None
    differs = [key for key in identity if earlier.get(key) != identity[key]]
    if differs:
        raise ConfigError(f"{folder} holds sweep {identity['name']!r} with another {', '.join(differs)}; "
                          "mixing them would make one report of two experiments: choose another NAME= "
                          "(or move the folder away)")


def train_command(sweep_name, run, extra_args):
    """The argv of one run, from the repository root, without --resume."""
    folder = run.folder.resolve()
    return [sys.executable, "-m", "gpt2.train", f"@{folder / 'train.args'}", *extra_args,
            f"--seed={run.seed}", f"--out-dir={folder}", f"--json-output={folder / FINISHED}",
            f"--tracker-group={sweep_name}", f"--tracker-run-name={run.name}"]


def command_script(sweep_name, run, extra_args):
    """command.sh: the run as one self-contained command, resuming when the
    folder shows an earlier start (what `make sweep` does, and what a
    scheduler's task runs: sbatch --array, see docs/experiments.md)."""
    folder = shlex.quote(str(run.folder.resolve()))
    return (
        "#!/bin/sh\n"
        f"# sweep {sweep_name}: {run.name}\n"
        f"cd {shlex.quote(str(REPO_ROOT))} || exit 1\n"
        f"[ -f {folder}/{FINISHED} ] && exit 0  # finished\n"
        f"resume=\n[ -f {folder}/ckpt.pt ] || [ -f {folder}/tracking.jsonl ] && resume=--resume\n"
        f"exec {shlex.join(train_command(sweep_name, run, extra_args))} $resume \"$@\"\n"
    )


def _die_with_parent():
    """In the child: get SIGKILL when the sweep driver dies (Linux), so a
    killed sweep leaves no training running on into the next attempt."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def job_environments(jobs):
    """Environment changes of each of `jobs` parallel slots: one GPU each
    when there are enough GPUs, else the CPU cores split between them."""
    gpus = _gpu_count()
    if gpus >= jobs > 1:
        return [{"CUDA_VISIBLE_DEVICES": str(slot)} for slot in range(jobs)]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return [{"OMP_NUM_THREADS": str(threads)} if jobs > 1 else {} for _ in range(jobs)]


def _gpu_count():
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def start(run, env_changes):
    """Start one run (its command.sh) with output to its train.log."""
    log = open(run.folder / LOG, "ab")
    process = subprocess.Popen([str(run.folder / COMMAND)], stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, **env_changes), preexec_fn=_die_with_parent)
    log.close()
    return process


def best_val(run):
    try:
        return json.loads((run.folder / FINISHED).read_text())["best_val_loss"]
    except (OSError, ValueError, KeyError):
        return None


def execute(runs, jobs, say=print):
    """Run what is not finished, `jobs` at a time; a progress line per
    finished run with an ETA from the runs so far.  Returns the failed runs."""
    todo = [run for run in runs if not run.finished]
    done_before = len(runs) - len(todo)
    if done_before:
        say(f"sweep: {done_before} of {len(runs)} runs already finished; skipping them")
    slots = job_environments(jobs)
    free, active, failed, durations = list(range(jobs)), {}, [], []
    started_at = time.monotonic()
    while todo or active:
        while todo and free:
            run, slot = todo.pop(0), free.pop(0)
            active[slot] = (run, start(run, slots[slot]), time.monotonic())
        time.sleep(0.2)
        for slot, (run, process, began) in list(active.items()):
            if process.poll() is None:
                continue
            del active[slot]
            free.append(slot)
            durations.append(time.monotonic() - began)
            finished = done_before + len(durations)
            remaining = len(todo) + len(active)
            eta = sum(durations) / len(durations) * remaining / jobs
            if process.returncode == 0 and run.finished:
                outcome = f"best val {best_val(run):.4f}"
            else:
                failed.append(run)
                outcome = f"FAILED (exit {process.returncode}; see {run.folder / LOG})"
            say(f"[{finished}/{len(runs)}] {run.name}: {outcome} in {durations[-1]:.1f} s | "
                f"elapsed {time.monotonic() - started_at:.0f} s, ETA {eta:.0f} s")
    return failed


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="", help="a sweep file (SWEEP=)")
    parser.add_argument("--base", default="", help="preset the points start from (BASE=)")
    parser.add_argument("--vary", default="", help='options and values: "OPTIMIZER=adamw,adamwspam MAX_ITERS=30"')
    parser.add_argument("--seeds", default="", help="runs per point (SEEDS=, default 1)")
    parser.add_argument("--name", default="", help="the sweep's name (NAME=; default from the file or grid)")
    parser.add_argument("--jobs", default="1", help="runs at once (JOBS=, default 1)")
    parser.add_argument("--root", default="sweeps", help="folder of the sweeps (default: sweeps)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.add_argument("--plan-only", action="store_true", help="check and write the run folders, train nothing")
    parser.add_argument("--only", type=int, default=None, metavar="INDEX",
                        help="run only run INDEX of sweep.json's runs (0-based; a scheduler's array task), no report")
    parser.add_argument("extra", nargs="*", help="flags added to every run (after --)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if not args.jobs.isdigit() or int(args.jobs) < 1:
            raise ConfigError(f"JOBS={args.jobs!r} must be a whole number of at least 1")
        if args.file and (args.vary or args.base):
            raise ConfigError("give a sweep file (SWEEP=) or BASE=/VARY=, not both")
        if args.file:
            sweep = parse_file(args.file)
            for key, value in (("SEEDS", args.seeds), ("NAME", args.name)):
                if value:  # SEEDS= / NAME= on the command line win over the file's
                    override(sweep, key, value, key)
        else:
            sweep = parse_command_line(args.base, args.vary, args.seeds, args.name)
        folder, runs = plan(sweep, args.root, args.extra)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"sweep {sweep.name}: {len(runs)} runs ({len(runs) // sweep.seeds} points x {sweep.seeds} seeds) "
          f"in {folder}", flush=True)
    if args.plan_only:
        return 0
    if args.only is not None:
        if not 0 <= args.only < len(runs):
            print(f"error: --only {args.only}: the sweep has runs 0 to {len(runs) - 1}", file=sys.stderr)
            return 1
        runs, args.no_report = [runs[args.only]], True
    begun = time.monotonic()
    try:
        failed = execute(runs, int(args.jobs), say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:  # Ctrl-C reached the runs too: each saved what it had
        print(f"interrupted; `make sweep` with the same settings resumes {sweep.name}", file=sys.stderr)
        return 130
    print(f"sweep {sweep.name}: {len(runs) - len(failed)} of {len(runs)} runs finished "
          f"({time.monotonic() - begun:.0f} s this time)", flush=True)
    if failed:
        print(f"error: {len(failed)} runs failed: {', '.join(run.name for run in failed)}; "
              "their train.log says why; `make sweep` again retries them", file=sys.stderr)
        return 1
    if not args.no_report:
        from scripts.experiments import report

        return report.main(["--sweep", str(folder), "--track"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
