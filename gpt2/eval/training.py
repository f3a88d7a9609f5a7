"""Eval during and at the end of training: the two calls the training code
makes (gpt2/run/trainer.py Trainer.evaluate, gpt2/train.py)."""

import functools
import time

from gpt2.eval import hellaswag


@functools.lru_cache(maxsize=4)
def _items(local_file, data_dir, limit):
    return hellaswag.read_items(hellaswag.locate(local_file, data_dir), limit)


def hellaswag_due(cfg, iter_num):
    """Every EVAL_HELLASWAG_INTERVAL-th evaluation (by iteration), 0: never."""
    every = cfg.eval.eval_hellaswag_interval
    return every > 0 and (iter_num // cfg.training.eval_interval) % every == 0


def hellaswag_during_training(trainer):
    """At the evaluations EVAL_HELLASWAG_INTERVAL picks, score HellaSwag on
    every rank (its share of the items, summed in item order: the same
    numbers on 1 or N ranks) and log eval/hellaswag_* (rank 0).  Returns
    the result, or None when not due."""
    cfg, state = trainer.cfg, trainer.state
    if not hellaswag_due(cfg, state.iter_num):
        return None
    start = time.perf_counter()
    items = _items(cfg.eval.eval_hellaswag_file, cfg.data.data_dir, cfg.eval.eval_hellaswag_limit)
    model = trainer.raw_model
    result = hellaswag.score_items(model, items, block_size=model.config.block_size, device=trainer.device,
                                   rank=trainer.dist.rank, world_size=trainer.dist.world_size,
                                   autocast=trainer.precision.autocast, all_reduce=trainer.dist.all_reduce_sum)
    model.train()
    if trainer.dist.is_main:
        trainer.trackers.log({f"eval/hellaswag_{name}": result[name] for name in hellaswag.METRICS},
                             step=state.iter_num)
        trainer.log(f"hellaswag {state.iter_num} | acc {result['acc']:.4f} | acc_norm (llm.c) "
                    f"{result['acc_norm_llmc']:.4f} | acc_norm (harness) {result['acc_norm_harness']:.4f} | "
                    f"{result['items']} items in {time.perf_counter() - start:.1f} s")
    return result


def eval_at_end(cfg, flags, dist, stopped_by):
    """EVAL_AT_END: EVAL_TASKS on the run's best.pt (rank 0, after training)."""
    if not cfg.eval.eval_at_end or stopped_by or not dist.is_main:
        return None
    from argparse import Namespace
    from pathlib import Path

    from gpt2.eval import parse_tasks
    from gpt2.eval.cli import evaluate_checkpoint
    from gpt2.run.checkpoint import BEST

    args = Namespace(**{**flags, "text": "", "trackers": True})
    best = Path(cfg.training.out_dir) / BEST
    if not best.is_file():
        return None
    return evaluate_checkpoint(args, best, parse_tasks(cfg.eval.eval_tasks))
