"""The typed config of the "Evaluation" menu (gpt2/eval/Kconfig)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalConfig:
    eval_tasks: str
    eval_hellaswag_file: str
    eval_hellaswag_limit: int
    eval_hellaswag_interval: int
    eval_at_end: bool
    eval_harness_tasks: str
    eval_harness_limit: int
