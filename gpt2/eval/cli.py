"""Scores that compare with the literature: `make eval CKPT=... [TASKS=...]`.

    python gpt2/eval.py --ckpt out/best.pt                       # EVAL_TASKS (hellaswag,ppl)
    python gpt2/eval.py --ckpt out/best.pt --eval-tasks ppl --text notes.txt
    make eval CKPT=out/best.pt TASKS=hellaswag,harness

Tasks (gpt2/eval/): hellaswag (acc, acc_norm llm.c style, acc/acc_norm
harness style), ppl (the whole val split in order, or --text FILE),
harness (lm-evaluation-harness on the exported model).  Results: a console
table, out/best.eval.json beside the checkpoint (atomic, merged with
earlier tasks'), and the checkpoint's own tracker run.  Options: the
"Evaluation" menu of gpt2/eval/Kconfig, with DEVICE, DATA_DIR and DATASET
(--config FILE for a .config's values).  Bad input: one `error:` line, exit
status 1, nothing written.
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gpt2.cli import Tool
from gpt2.cpu.allocator import keep_freed_memory
from gpt2.eval import parse_tasks, task_module
from gpt2.eval.results import log_to_trackers, print_table, write_results
from gpt2.model.gpt import GPT
from gpt2.run.checkpoint import Checkpoint
from gpt2.run.checkpoint import load_model as load_checkpoint_model
from gpt2.run.checkpoint_source import chosen_checkpoint
from gpt2.run.precision import pick_device
from lib.errors import UserError


def _own_flags(parser):
    parser.add_argument("--ckpt", default=None, help="checkpoint to evaluate (default: OUT_DIR's best.pt)")
    parser.add_argument("--text", default="", help="ppl: score this UTF-8 text file instead of the val split")
    parser.add_argument("--no-trackers", dest="trackers", action="store_false",
                        help="do not log into the checkpoint's tracker run")


TOOL = Tool("gpt2/eval.py", __doc__.split("\n\n")[0], menus=("Evaluation",),
            symbols=("DEVICE", "DATA_DIR", "DATASET", "OUT_DIR"), extra=_own_flags)


def build_parser(kconf=None):
    """The command line, defaults from `kconf` (the Kconfig tree, with a .config loaded or not)."""
    return TOOL.parser(kconf)


@dataclass
class Context:
    """What a task's run() gets."""

    args: argparse.Namespace
    model: GPT
    device: torch.device
    checkpoint_path: Path
    checkpoint: Checkpoint
    extra: dict = field(default_factory=dict)


def load_model(path, device):
    model, checkpoint = load_checkpoint_model(path)  # one reader of a checkpoint's model (gpt2/run/checkpoint.py)
    return model.to(device), checkpoint


def evaluate_checkpoint(args, ckpt, tasks, log=print):
    """Run `tasks` on the checkpoint `ckpt`; write and log the results.
    Returns the metrics."""
    device = pick_device(args.device, "evaluating")
    if device.type == "cpu":
        # Each item's activations and logits are freed and taken again many
        # times a second: glibc keeping the memory saves the page faults
        # (HellaSwag on 124M 1.12x faster, docs/benchmarks.md), as training does.
        keep_freed_memory()
    model, checkpoint = load_model(ckpt, device)
    ctx = Context(args, model, device, Path(ckpt), checkpoint)
    metrics = {}
    for name in tasks:
        start = time.perf_counter()
        metrics.update(task_module(name).run(ctx))
        log(f"eval {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    extra = {key: value for key, value in ctx.extra.items() if key == "harness_results"}
    path = write_results(ckpt, checkpoint.iter_num, metrics, extra)
    print_table(metrics)
    if "harness_table" in ctx.extra:
        print(ctx.extra["harness_table"], flush=True)
    if args.trackers:
        names = log_to_trackers(checkpoint, metrics)
        if names:
            log(f"eval results logged to the run's {', '.join(names)}", file=sys.stderr)
    log(f"eval results written to {path}", file=sys.stderr)
    return metrics


def main(argv=None):
    try:
        args = TOOL.parse_args(argv)
        tasks = parse_tasks(args.eval_tasks)
        ckpt = chosen_checkpoint(args.ckpt, args.out_dir)  # a file or a tracker artifact (docs/tracking.md)
        evaluate_checkpoint(args, ckpt, tasks)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
