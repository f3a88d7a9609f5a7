"""Eval tasks: one module per task in this folder (hellaswag.py, ppl.py,
harness.py), each with NAME, DESCRIPTION and run(ctx) -> {metric: value}.
The registry finds them by name; an unknown name lists the known ones."""

import importlib

from lib.errors import UserError

TASK_MODULES = ("hellaswag", "ppl", "harness")


class UnknownTask(UserError):
    pass


def task_module(name):
    if name not in TASK_MODULES:
        raise UnknownTask(f"unknown eval task {name!r}; the known ones are {', '.join(TASK_MODULES)}")
    return importlib.import_module(f"gpt2.eval.{name}")


def parse_tasks(text):
    """The task names of a comma-separated list, each checked."""
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    if not names:
        raise UnknownTask(f"no eval task given; name some of {', '.join(TASK_MODULES)} (TASKS=...)")
    for name in names:
        task_module(name)
    return names
