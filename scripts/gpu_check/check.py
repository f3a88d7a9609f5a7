"""gpu-check's command line and its step runner (the steps: steps.py)."""

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from scripts.gpu_check import preflight, runs
from scripts.gpu_check.steps import REFERENCE_STEPS, STEP_NAMES, STEPS, Context, budget_on_one_gpu

IN_REPO_CORPUS = runs.REPO_ROOT / "wheelhouse" / "data" / "tinyshakespeare" / "input.txt"  # make wheelhouse's copy
# A step is cut at its budget times this (the budgets are estimates); the
# report is rewritten after each step, so a cut of the whole keeps the rest.
LIMIT_FACTOR = 1.5


class CheckError(Exception):
    """gpu-check cannot start; the message is one line."""


class StepTimeout(Exception):
    """A step ran past its limit."""


def build_parser():
    from scripts.gpu_check import __doc__ as doc

    parser = argparse.ArgumentParser(prog="python3 -m scripts.gpu_check", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", default="gpu-check.json", help="where to write the figures (default: %(default)s)")
    parser.add_argument("--input", type=Path, default=IN_REPO_CORPUS if IN_REPO_CORPUS.is_file() else None,
                        help="Tiny Shakespeare's input.txt (default: %(default)s, else $GPT2LAB_SHAKESPEARE, "
                        "data/shakespeare/input.txt, ../shared/data/tinyshakespeare/input.txt, else downloaded once)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep data, checkpoints and the Trackio database here (default: a temporary folder)")
    parser.add_argument("--skip", action="append", default=[], choices=STEP_NAMES, metavar="STEP",
                        help=f"leave a step out (repeatable): {', '.join(STEP_NAMES)}")
    parser.add_argument("--references", action="store_true",
                        help="also the reference scores that need internet (OpenAI's 124M on HellaSwag: "
                        + ", ".join(name for name, _, _ in REFERENCE_STEPS) + ")")
    parser.add_argument("--deterministic", action="store_true",
                        help="train the preset and resume runs with --deterministic (bit-identical resume)")
    return parser  # fmt: skip


def check_arguments(args):
    """What a user can get wrong, found before the GPU is touched."""
    if args.input is None:
        from gpt2.data.sources import DataError, find_shakespeare

        try:
            args.input = find_shakespeare(runs.REPO_ROOT)
        except DataError as err:
            raise CheckError(str(err)) from None
    if not args.input.is_file():
        raise CheckError(f"--input {args.input}: no such file; point --input at Tiny Shakespeare's input.txt "
                         "(make wheelhouse copies it to wheelhouse/data/tinyshakespeare/input.txt)")  # fmt: skip
    out = Path(args.out)
    if out.is_dir():
        raise CheckError(f"--out {out} is a folder; give a file path such as gpu-check.json")
    if not out.resolve().parent.is_dir():
        raise CheckError(f"--out {out}: its folder does not exist")
    message = preflight.missing_message(preflight.missing_packages())
    if message:
        raise CheckError(message)


def require_cuda():
    """The first CUDA call: without a GPU, the one line main() prints."""
    import torch

    if not torch.cuda.is_available():
        raise CheckError(
            "no CUDA GPU here (torch.cuda.is_available() is False"
            + (f"; this torch {torch.__version__} has no CUDA build" if torch.version.cuda is None
               and torch.version.hip is None else "")
            + "); run make gpu-check on a machine with an NVIDIA (or ROCm) GPU"
        )  # fmt: skip


@contextlib.contextmanager
def time_limit(seconds):
    """StepTimeout in this (main) thread after `seconds`."""

    def expire(signum, frame):
        raise StepTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def write_report(out, report):
    from lib.atomic import write_text_atomically

    write_text_atomically(out, json.dumps(report, indent=2, default=str) + "\n")


def run_steps(ctx, out, steps=STEPS, skip=()):
    """Each step in turn under its limit; the report rewritten after each."""
    report = ctx.report
    report.update(budget_s={name: budget for name, budget, _ in steps}, budget_on_one_gpu_s=budget_on_one_gpu(steps),
                  steps={}, figures=ctx.figures, ran=[], passed=[], failed=[], skipped=[], finished=False)  # fmt: skip
    start = time.monotonic()
    write_report(out, report)
    for name, budget, function in steps:
        if name in skip:
            report["steps"][name] = {"skipped": "--skip"}
            report["skipped"].append(name)
            write_report(out, report)
            ctx.say(f"{name}: skipped (--skip)")
            continue
        limit = budget * LIMIT_FACTOR
        ctx.deadline = time.monotonic() + limit
        began = time.monotonic()
        try:
            with time_limit(limit + min(5.0, limit / 10)):  # the runs' own watchdogs (ctx.remaining()) fire first
                result = function(ctx)
        except StepTimeout:
            result = {"ok": False, "summary": f"FAILED: over its {limit:.0f} s limit"}
        except Exception as e:  # one step's failure is recorded; the others still run
            message = " ".join(str(e).split()) or type(e).__name__
            result = {"ok": False, "summary": f"FAILED: {type(e).__name__}: {message}"}
        result.update(seconds=time.monotonic() - began, budget_s=budget, limit_s=limit)
        report["steps"][name] = result
        if result.get("skipped"):  # the step found nothing to do here (ddp on one GPU)
            report["skipped"].append(name)
        else:
            report["ran"].append(name)
            report["passed" if result["ok"] else "failed"].append(name)
        write_report(out, report)  # before its line: a line printed is a step on disk
        ctx.say(f"{name}: {result['summary']}")
    report.update(finished=True, seconds=time.monotonic() - start, ok=not report["failed"])
    write_report(out, report)
    return report


def final_line(report, out):
    names = lambda key: ", ".join(report[key]) or "none"  # noqa: E731
    verdict = "all steps passed" if report["ok"] else "some steps FAILED"
    return (f"gpu-check: {verdict} in {report['seconds']:.0f} s | ran {names('ran')} | passed {names('passed')} | "
            f"failed {names('failed')} | skipped {names('skipped')} | figures in {out}")  # fmt: skip


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        require_cuda()
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    say = lambda line: print(line, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="gpt2lab-gpu-check-") as scratch:
        work = (args.work_dir or Path(scratch)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        report = {"command": "python3 -m scripts.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "deterministic": args.deterministic}  # fmt: skip
        report = run_steps(Context(args=args, work=work, say=say, report=report), args.out,
                           steps=STEPS + (REFERENCE_STEPS if args.references else []), skip=args.skip)
    say(final_line(report, args.out))
    return 0 if report["ok"] else 1
