"""Train GPT-2 on a prepared token dataset, on one process or several (DDP).

    python gpt2/train.py --device cpu --max-iters 100            # one process
    torchrun --standalone --nproc-per-node 8 gpt2/train.py       # 8 GPUs

Flags: gpt2/cli.py (defaults from Kconfig; `make train` passes .config's).
gpt2/run/setup.py builds the run into a Trainer (gpt2/run/trainer.py: the
step, evaluation and checkpoint, the loop); this file is the run's life from
the command line to the exit status.
"""

# Run as a file (the commands above, and torchrun's workers), Python puts
# gpt2/ first on sys.path, where its folders (model/, data/, run/, ...) could
# shadow packages of the same name: run the same command as the module
# gpt2.train instead, keeping the interpreter's own options (torchrun's -u).
# Nothing runs before this.
if __name__ == "__main__" and not __package__:
    import os
    import sys

    _options = sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv)]
    os.execv(sys.executable, [sys.executable, *_options, "-m", "gpt2.train", *sys.argv[1:]])

import json
import os
import sys
from pathlib import Path

from gpt2 import cli
from gpt2.configs import RunConfig
from gpt2.eval.training import eval_at_end
from gpt2.run import distributed
from gpt2.run.checkpoint import LATEST
from gpt2.run.determinism import error_message, nondeterministic_operation
from gpt2.run.out_dir_lock import out_dir_lock
from gpt2.run.precision import resolve_precision
from gpt2.run.preemption import StopSignals, StoppedBySignal
from gpt2.run.setup import build, plain_flags, resume_rng
from lib.atomic import write_text_atomically
from lib.errors import UserError


def log_line(message):
    # flush: lines reach a pipe (make, a test watching the output) at once.
    print(message, flush=True)


def no_log(message):
    """The log of ranks other than 0."""


def train(args, log=log_line):
    """Run one training job from parsed flags (gpt2/cli.py); returns the final
    metrics (rank 0; other ranks return None).  The flags become the typed
    configs here, once; nothing after this reads `args`."""
    cfg = RunConfig.from_flags(vars(args))
    precision = resolve_precision(cfg.system, log=log if distributed.launched_rank() == 0 else no_log)
    dist = distributed.start(precision.device_type, cfg.system.dist_timeout)
    # A rank that fails alone (a full disk on rank 0) makes every other rank
    # exit within seconds, not at the next collective's timeout.
    with distributed.stop_all_on_failure(dist, expected=(StoppedBySignal,)):
        log = log if dist.is_main else no_log
        # One run per --out-dir (gpt2/run/out_dir_lock.py), for the whole run.
        with out_dir_lock(cfg.training.out_dir, dist):
            trainer, checkpoint = build(cfg, plain_flags(args), precision, dist, log,
                                        train_args=cli.command_line(args))
            # SIGTERM, SIGUSR1 and SIGINT stop the loop with a checkpoint
            # (gpt2/run/preemption.py), and cannot cut the trackers' closing short.
            with StopSignals(announce=dist.is_main) as stop:
                try:
                    if checkpoint:
                        resume_rng(trainer, checkpoint)
                        checkpoint = None  # its tensors are copied into the run; free them for the whole training
                    losses, stopped_by = trainer.fit(stop)
                    metrics = None
                    if dist.is_main and not stopped_by:
                        metrics = trainer.report_final(losses)
                        if cfg.training.json_output:
                            write_text_atomically(cfg.training.json_output, json.dumps(metrics, indent=2) + "\n")
                finally:
                    trainer.trackers.finish()
                # The other ranks wait here until rank 0 has written its files, so
                # no rank tears the process group down under another still using it.
                dist.barrier()
            eval_at_end(cfg, vars(args), dist, stopped_by)  # EVAL_AT_END: make eval of best.pt
            if stopped_by:
                raise StoppedBySignal(stopped_by, trainer.state.iter_num, Path(cfg.training.out_dir) / LATEST, stop)
            return metrics


def main(argv=None):
    """Command-line entry point.  Exit status 0; 1 after an error a user can
    fix (one `error:` line on stderr, no traceback); 128 + the signal's
    number after a stop on SIGTERM (143), SIGUSR1 (138) or SIGINT/Ctrl-C
    (130) during training, with a checkpoint at the step it stopped at
    (gpt2/run/preemption.py); 130 also after Ctrl-C before training started
    (then --resume continues from the last checkpoint, if any)."""
    args = cli.parse_args(argv)
    stopped = None
    try:
        train(args)
        return 0
    except UserError as e:
        message, status = f"error: {e}", 1
    except OSError as e:  # a file or folder of the run cannot be written or read (full disk, permissions)
        message, status = f"error: {e.strerror or e}: {e.filename}; check --out-dir, --data-dir and --json-output", 1
    except StoppedBySignal as e:
        message, status, stopped = str(e), e.status, e.signals
    except KeyboardInterrupt:
        message, status = f"interrupted; --resume continues from the last checkpoint in {args.out_dir}", 130
    except RuntimeError as e:  # --deterministic and an operation without a deterministic kernel; else a bug
        operation = nondeterministic_operation(e)
        if operation is None:
            raise
        message, status = f"error: {error_message(operation)}", 1
    if distributed.launched_rank() == 0:
        print(message, file=sys.stderr, flush=True)
    # After a stop the signal handlers are held until the line is out
    # (gpt2/run/preemption.py).  A torchrun worker then ignores them to its exit:
    # torchrun sends SIGTERM to the workers left once one has exited.
    if stopped is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        stopped.ignore()
    elif stopped is not None:
        stopped.restore()
    return status


if __name__ == "__main__":
    sys.exit(main())
