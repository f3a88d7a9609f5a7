"""lm-evaluation-harness through its Python API (lm_eval.simple_evaluate,
model "hf") on the checkpoint exported to a Hugging Face folder (a temporary
one, gpt2/model/export.py): any task the harness knows (EVAL_HARNESS_TASKS),
EVAL_HARNESS_LIMIT items each.  Its results are kept as it reports them
(the "results" dict and its table, lm_eval.utils.make_table)."""

import tempfile

from lib.errors import UserError

NAME = "harness"
DESCRIPTION = "lm-evaluation-harness (optional extra [eval]) on the exported model: EVAL_HARNESS_TASKS"
INSTALL = "lm-evaluation-harness is not installed; install it with `.venv/bin/pip install -e '.[eval]'` (or pip install lm-eval)"


class HarnessError(UserError):
    """The harness is missing or refused the tasks."""


def require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise HarnessError(INSTALL) from None
    return lm_eval


def evaluate_folder(folder, tasks, limit=0, device="cpu", include_path=None, batch_size=4):
    """simple_evaluate's whole output on the Hugging Face folder `folder`."""
    lm_eval = require_lm_eval()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"lm-evaluation-harness knows no task {', '.join(unknown)}; see `lm_eval ls tasks`")
    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=list(tasks),
                                   limit=limit or None, device=str(device), batch_size=batch_size,
                                   task_manager=manager)


def run(ctx):
    require_lm_eval()
    from lm_eval.utils import make_table

    from gpt2.model.export import export

    tasks = [t.strip() for t in ctx.args.eval_harness_tasks.split(",") if t.strip()]
    if not tasks:
        raise HarnessError("--eval-harness-tasks is empty; name lm-evaluation-harness tasks, e.g. hellaswag")
    with tempfile.TemporaryDirectory(prefix="gpt2lab-eval-") as tmp:
        folder, _ = export(ctx.checkpoint_path, f"{tmp}/model", loaded=(ctx.model, ctx.checkpoint))
        out = evaluate_folder(folder, tasks, ctx.args.eval_harness_limit, ctx.device)
    metrics = {}
    for task, values in out["results"].items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "," in key:
                metric, _filter = key.split(",", 1)
                metrics[f"harness_{task}_{metric}"] = float(value)
    ctx.extra["harness_results"] = out["results"]
    ctx.extra["harness_table"] = make_table(out)
    return metrics
