"""Re-create a tracked training run from its record (`make reproduce RUN=...`).

    python -m scripts.experiments.reproduce RUN [--out-dir DIR] [--strict] [--dry-run] [--trackio-dir D] [--wandb-dir D]

RUN is a run name or id in the Trackio databases ($TRACKIO_DIR or Trackio's
default folder) or among the W&B offline runs (./wandb, $WANDB_DIR/wandb), a
W&B offline run folder, or an out-dir holding tracking.jsonl
(lib/trackers/run_records.py).  From the run's config
(lib/trackers/run_info.py) this

1. compares this checkout and machine with the record: git commit,
   uncommitted changes, untracked files, the prepared data (prepared first
   when needed), package versions, device and thread count; each difference
   is one `differs:` line, and --strict refuses to train on any (exit 1);
2. writes into the new out-dir the run's .config, its uncommitted changes
   (recorded.diff: `git apply` it on the recorded commit) and the command
   line (train.args); ./.config is not touched and nothing is checked out;
3. trains `python -m gpt2.train @<new out-dir>/train.args`: the recorded
   command line (train_args) on the recorded device, dtype, compile setting
   and CPU matmul library (never `--cpu-matmul auto`, which decides by
   timing) with the recorded thread count (OMP_NUM_THREADS), into --out-dir
   (default <old out-dir>-repro, then -repro2, ...), as run <name>-repro of
   the same project and group, with the same trackers in the same folders,
   --no-resume;
4. prints the recorded and new best/final losses side by side, compares the
   logged train/loss and val/loss step by step, and says `identical` or
   what differs.

A record that lacks fields (older runs: no train_args, no provenance) is
reported with what is assumed instead, and reproduced unless --strict.
--dry-run stops after the checks, printing the command.  Exit status 0
after a reproduction (with --strict: 1 when the results differ); 1 when RUN
matches no run or several, a check fails under --strict, or training fails.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from gpt2.run.checkpoint import load_model_checkpoint
from gpt2.run.checkpoint_source import checkpoint_path
from lib.trackers.artifacts import is_artifact_reference
from lib.trackers.journal import JOURNAL_NAME
from lib.trackers.run_info import REDACTED, git_commit, git_diff, git_dirty, package_versions, untracked_files
from lib.trackers.run_records import find_runs, journal_record
from lib.errors import UserError

RESULT_KEYS = ("best_val_loss", "final_val_loss", "final_train_loss")
HISTORY_KEYS = ("train/loss", "val/loss")
DATA_KEYS = ("tokenizer", "format_version", "source_sha256", "train_tokens", "val_tokens", "tokens_sha256")
RUN_FACTS = ("device", "dtype", "compile", "cpu_matmul", "torch_threads")  # compared after training
SUFFIX = "-repro"


class ReproduceError(UserError):
    """A one-line reason to stop."""


def say(message):
    print(f"reproduce: {message}", flush=True)


def _list(names, limit=5):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------
# The command line the record gives


def recorded_command(config):
    """(the recorded train.py arguments, [(missing field, what is assumed)])."""
    if isinstance(config.get("train_args"), list):
        return list(config["train_args"]), []
    from lib.kconfig import load_tree
    from lib.options import train_options

    options = train_options(load_tree())
    known = [option for option in options if config.get(option.dest, REDACTED) != REDACTED]
    if not known:
        raise ReproduceError("the record holds neither train_args nor any train.py flag; it is not a training run's")
    args = [option.render(config[option.dest]) for option in known]
    lacking = [option.flag for option in options if option not in known]
    assumed = "rebuilds the command line from the recorded flags"
    if lacking:
        assumed += f"; the flags it lacks or holds redacted take this checkout's defaults: {_list(lacking, 8)}"
    return args, [("train_args", assumed)]


def missing_fields(config, flags):
    """[(field, what is assumed)] for the other fields an older record lacks."""
    missing = []
    if "provenance" not in config:
        assumed = (f"no check of package versions, data, device or uncommitted changes; trains with "
                   f"--device {flags.device} --dtype {flags.dtype} --cpu-matmul {flags.cpu_matmul} as recorded")
        if flags.cpu_matmul == "auto":
            assumed += " (auto picks by timing: the library may differ from the run's)"
        missing.append(("provenance", assumed))
    if "dot_config" not in config:
        missing.append(("dot_config", "writes no .config"))
    if "git_commit" not in config:
        missing.append(("git_commit", "no check of the code's commit"))
    return missing


def rendered(flag, value):
    if value is True or value is False:
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag}={value}"


def with_overrides(args, overrides):
    """`args` (`--flag=value` / `--flag` / `--no-flag`) with each flag of
    `overrides` ({flag: value}) set in place, or appended."""
    out, done = [], set()
    for arg in args:
        flag = arg.split("=", 1)[0]
        flag = f"--{flag[5:]}" if flag.startswith("--no-") and f"--{flag[5:]}" in overrides else flag
        if flag in overrides:
            if flag not in done:
                out.append(rendered(flag, overrides[flag]))
                done.add(flag)
            continue
        out.append(arg)
    return out + [rendered(flag, value) for flag, value in overrides.items() if flag not in done]


def reproduction_args(args, record, flags, out_dir):
    """The recorded arguments, set to train what the run trained, into `out_dir`."""
    prov = record.config.get("provenance") or {}
    overrides = {
        "--out-dir": str(out_dir),
        "--json-output": str(out_dir / "metrics.json"),
        "--tracker-project": record.config.get("tracker_project") or record.project,
        "--tracker-run-name": (record.config.get("tracker_run_name") or record.name) + SUFFIX,
        "--resume": False,
    }
    if prov.get("device"):
        overrides["--device"] = prov["device"] if prov.get("world_size", 1) == 1 else prov["device"].split(":")[0]
    for key in ("dtype", "compile", "cpu_matmul"):
        if key in prov:
            overrides[f"--{key.replace('_', '-')}"] = prov[key]
    if "wandb" in flags.tracker.split(",") and any(r.wandb_offline for r in [record, *record.also]):
        overrides["--wandb-offline"] = True
    return with_overrides(args, overrides)


def parse_flags(args):
    from gpt2.cli import parse_args

    try:
        return parse_args(args)
    except SystemExit:  # argparse printed why
        raise ReproduceError("the recorded command line does not parse with this checkout's train.py") from None


# ----------------------------------------------------------------------------
# Checks before training


def data_now(flags, prepare):
    """This machine's fingerprint of the data the run names: prepared first
    (`prepare`), else read from an existing meta.json (None when absent);
    the token files hashed, whatever meta.json says (~3 s per GB:
    gpt2/data/integrity.py)."""
    from gpt2.data.prepare import DataError, data_fingerprint, ensure_prepared, read_finished_meta

    folder = Path(flags.data_dir).expanduser().resolve() / flags.dataset
    if prepare:
        try:
            folder = ensure_prepared(flags.dataset, flags.data_dir, input_path=flags.data_input or None,
                                     max_tokens=flags.data_max_tokens, log=say)
        except DataError as exc:
            raise ReproduceError(f"cannot prepare the run's data: {exc}") from None
    return data_fingerprint(folder, verify=True) if read_finished_meta(folder) else None


def git_differences(config, prov):
    commit, dirty = git_commit(), git_dirty()
    found = []
    if config.get("git_commit") and config["git_commit"] != commit:
        found.append(f"git commit: the run used {config['git_commit']}, this checkout is at {commit or 'no commit'} "
                     f"(`git checkout {config['git_commit'][:12]}` for the same code)")
    if not prov:
        if config.get("git_dirty"):
            found.append("uncommitted changes: the run had some, and its record does not hold them")
        return found
    then = prov.get("git_diff")
    now = (git_diff() or {}).get("git_diff") if dirty else None
    if then != now:
        found.append(f"uncommitted changes (git diff HEAD): the run had {_changes(then)}, "
                     f"this checkout has {_changes(now)}")
    then_files, now_files = set(prov.get("untracked_files") or []), set(untracked_files() if dirty else [])
    if then_files != now_files:
        parts = [f"only in the run's tree: {_list(then_files - now_files)}" if then_files - now_files else "",
                 f"only here: {_list(now_files - then_files)}" if now_files - then_files else ""]
        found.append("untracked files: " + "; ".join(p for p in parts if p))
    return found


def _changes(diff):
    return f"{len(diff.encode()):,} bytes of changes" if diff else "no changes"


def machine_differences(prov, data):
    found = []
    then_versions, now_versions = prov.get("versions") or {}, package_versions()
    for name in then_versions:
        if then_versions[name] != now_versions.get(name):
            found.append(f"{name} version: the run used {then_versions[name]}, here {now_versions.get(name)}")
    then_data = prov.get("data") or {}
    if then_data and data is None:
        found.append(f"data: the run read {then_data.get('folder')}; nothing is prepared here yet")
    elif then_data:
        for name in data.get("tokens_altered", []):
            found.append(f"data: {Path(data['folder']) / name} does not hold the tokens meta.json recorded "
                         "(changed since it was prepared); prepare the data again for the run's tokens")
        for key in DATA_KEYS:
            if key == "tokens_sha256" and data.get("tokens_altered"):
                continue  # said above, naming the file
            if then_data.get(key) is not None and data.get(key) is not None and then_data[key] != data[key]:
                found.append(f"data {key}: the run read {then_data[key]}, {data['folder']} holds {data[key]}")
    if prov.get("init_from"):  # a fine-tuning run: the same starting weights?
        from gpt2.model.pretrained import weights_difference

        found += [d for d in [weights_difference(prov["init_from"])] if d]
    device = prov.get("device", "cpu")
    if not device.startswith("cpu"):
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            found.append(f"device: the run trained on {device} ({prov.get('gpu', 'a GPU')}); this machine has no CUDA")
    threads = prov.get("torch_threads")
    if threads and threads > (os.cpu_count() or 1):
        found.append(f"threads: the run used {threads} torch threads, this machine has {os.cpu_count()} CPUs")
    if prov.get("world_size", 1) > 1:
        found.append(f"processes: the run trained on {prov['world_size']} processes; this retrains in one")
    return found


# ----------------------------------------------------------------------------
# Training and the comparison


def new_out_dir(requested, record):
    """The reproduction's out-dir: never the run's own, never one holding a run."""
    old = record.location.parent if record.source == "journal" else Path(record.config.get("out_dir") or "out")
    if requested:
        out = Path(requested)
        if out.resolve() == old.resolve():
            raise ReproduceError(f"--out-dir {out} is the run's own out-dir; choose another")
        if (out / JOURNAL_NAME).exists():
            raise ReproduceError(f"--out-dir {out} already holds a run ({JOURNAL_NAME}); choose another or remove it")
        return out
    number = 1
    while (out := old.parent / f"{old.name}{SUFFIX}{number if number > 1 else ''}").exists():
        number += 1
    return out


def child_env(record, flags, prov, out_dir):
    """Our environment, plus: the new .config as KCONFIG_CONFIG (so the new
    record names it), the run's thread count, and the run's tracker folders."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    env["KCONFIG_CONFIG"] = str((out_dir / ".config").resolve())
    threads = prov.get("torch_threads")
    if threads and threads <= (os.cpu_count() or 1):
        env["OMP_NUM_THREADS"] = str(threads)
    records = [record, *record.also]
    trackio_dir = next((r.trackio_dir for r in records if r.trackio_dir), "")
    if trackio_dir and not flags.trackio_dir:
        env["TRACKIO_DIR"] = trackio_dir
    wandb_dir = next((Path(r.wandb_dir) for r in records if r.wandb_dir), None)
    if wandb_dir is not None and wandb_dir.name == "wandb":
        env["WANDB_DIR"] = str(wandb_dir.parent)
    return env


def _value(value):
    return "-" if value is None else repr(value)


def compare_results(record, out_dir):
    """Print recorded and new results side by side; return the differences."""
    summary, history = record.results()
    new = json.loads((out_dir / "metrics.json").read_text())
    new_record = journal_record(out_dir)
    _, new_history = new_record.results()
    differences = []
    say("results, as recorded and as reproduced:")
    for key in RESULT_KEYS:
        old_value, new_value = summary.get(key), new.get(key)
        print(f"  {key:<18}{_value(old_value):>22}  {_value(new_value):>22}")
        if old_value is None:
            differences.append(f"{key} not recorded")
        elif old_value != new_value:
            differences.append(f"{key} {new_value - old_value:+.3g}" if new_value is not None else f"{key} missing")
    for key in HISTORY_KEYS:
        old_points, new_points = history.get(key, {}), new_history.get(key, {})
        steps = sorted(set(old_points) & set(new_points))
        changed = [step for step in steps if old_points[step] != new_points[step]]
        line = f"{len(steps)} steps " + ("identical" if not changed else (
            f"differ at {len(changed)}, first at step {changed[0]}: "
            f"{old_points[changed[0]]!r} -> {new_points[changed[0]]!r}"))
        if set(old_points) != set(new_points):
            line += (f"; {len(set(old_points) - set(new_points))} steps only recorded, "
                     f"{len(set(new_points) - set(old_points))} only reproduced")
        print(f"  {key:<18}{line}")
        if changed or set(old_points) != set(new_points):
            differences.append(f"{key} at {len(changed)} of {len(steps)} steps" if changed else f"{key} steps")
    then, now = record.config.get("provenance") or {}, new_record.config.get("provenance") or {}
    for key in RUN_FACTS:
        if key in then and then[key] != now.get(key):
            differences.append(f"{key}: the run used {then[key]}, the reproduction {now.get(key)}")
    return differences


# ----------------------------------------------------------------------------


def run_of_artifact(reference):
    """The tracker run id a checkpoint artifact reference comes from (its
    checkpoint records the runs it logs to), for find_runs."""
    try:
        state = load_model_checkpoint(checkpoint_path(reference, "RUN")).trackers or {}
    except UserError as error:
        raise ReproduceError(str(error)) from None
    ids = [backend.get("run_id") for backend in (state.get("backends") or {}).values() if backend.get("run_id")]
    if not ids:
        raise ReproduceError(f"{reference}: its checkpoint records no tracker run to reproduce")
    say(f"{reference}: a checkpoint of run {ids[0]}")
    return ids[0]


def reproduce(args):
    if is_artifact_reference(args.run):
        args.run = run_of_artifact(args.run)
    records, searched = find_runs(args.run, args.trackio_dir or None, [args.wandb_dir] if args.wandb_dir else None)
    if not records:
        raise ReproduceError(f"no run {args.run!r}; looked in {', '.join(searched[:-1])} and {searched[-1]}")
    if len(records) > 1:
        raise ReproduceError(f"{args.run!r} matches {len(records)} runs: "
                             + "; ".join(r.describe() for r in records) + "; name one by its id or out-dir")
    record = records[0]
    config, prov = record.config, record.config.get("provenance") or {}
    say(f"run {record.describe()}, recorded in {record.where()}")

    train_args, missing = recorded_command(config)
    flags = parse_flags(train_args)
    missing += missing_fields(config, flags)
    for field_name, assumed in missing:
        print(f"notice: the record has no {field_name}; {assumed}", flush=True)
    data = data_now(flags, prepare=not args.dry_run) if prov else None
    differences = git_differences(config, prov) + (machine_differences(prov, data) if prov else [])
    for difference in differences:
        print(f"differs: {difference}", flush=True)
    if not differences:
        say("same commit, changes, data and versions as the run" if prov else "same commit as the run")
    if args.strict and (differences or missing):
        problems = [f"{n} {what}{'s' if n > 1 else ''}" for n, what in ((len(differences), "difference"),
                                                                        (len(missing), "missing field")) if n]
        raise ReproduceError(f"--strict: {' and '.join(problems)} (above); nothing trained")

    out_dir = new_out_dir(args.out_dir, record)
    command_args = reproduction_args(train_args, record, flags, out_dir)
    parse_flags(command_args)
    if args.dry_run:
        say("would train: " + shlex.join(["python", "-m", "gpt2.train", *command_args]))
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.args").write_text("".join(json.dumps(arg) + "\n" for arg in command_args))
    if config.get("dot_config") is not None:
        (out_dir / ".config").write_text(config["dot_config"])
    if prov.get("git_diff"):
        (out_dir / "recorded.diff").write_text(prov["git_diff"])
    say("the recorded command line with " + " ".join(arg for arg in command_args if arg not in train_args))
    written = ", ".join(name for name in (".config", "recorded.diff", "train.args") if (out_dir / name).exists())
    say(f"wrote {written} to {out_dir}; training: python -m gpt2.train @{out_dir / 'train.args'}")
    env = child_env(record, flags, prov, out_dir)
    status = subprocess.run([sys.executable, "-m", "gpt2.train", f"@{out_dir / 'train.args'}"], env=env).returncode
    if status:
        raise ReproduceError(f"training failed (exit status {status}); its output is above")

    result = compare_results(record, out_dir)
    if not result:
        say("identical")
        return 0
    say("differs: " + "; ".join(result))
    return 1 if args.strict else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="run name or id, W&B offline run folder, out-dir, or a checkpoint artifact "
                        "(trackio:P/checkpoint-R:best, wandb:P/checkpoint-R:latest)")
    parser.add_argument("--out-dir", default="", help=f"where to train (default: <old out-dir>{SUFFIX})")
    parser.add_argument("--strict", action="store_true", help="refuse to train when anything differs or is missing")
    parser.add_argument("--dry-run", action="store_true", help="check and print the command; train nothing")
    parser.add_argument("--trackio-dir", default="", help="Trackio databases' folder (default: $TRACKIO_DIR or "
                        "Trackio's default)")
    parser.add_argument("--wandb-dir", default="", help="folder holding offline-run-* (default: ./wandb and "
                        "$WANDB_DIR/wandb)")
    args = parser.parse_args(argv)
    if not args.run.strip():
        parser.error("name the run: make reproduce RUN=<name, id or out-dir>")
    try:
        return reproduce(args)
    except (ReproduceError, ValueError, OSError) as exc:
        message = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else exc
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
