"""gpu-check's "hellaswag" step: OpenAI's GPT-2 (124M, INIT_FROM=gpt2) through
`make eval`'s code, HellaSwag scored llm.c's way and by lm-evaluation-harness,
against the published numbers: acc_norm 29.55 (llm.c) and 31.14 (the
harness), each within 0.1 points.  Needs internet (the weights, HellaSwag,
the harness's copy of it); offline the step is skipped and says why.

    python -m scripts.gpu_check.eval_reference --work DIR --device cuda   # what the step runs
"""

import argparse
from dataclasses import asdict
import json
import sys
import urllib.request
from pathlib import Path

EXPECTED = {"hellaswag_acc_norm_llmc": 0.2955, "harness_hellaswag_acc_norm": 0.3114}
TOLERANCE = 0.001  # 0.1 points
PROBES = ("https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
          "https://huggingface.co/openai-community/gpt2/resolve/main/config.json")


def offline_reason(timeout=10):
    """None with internet, else why not (one line)."""
    for url in PROBES:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
        except OSError as exc:
            return f"no internet ({url}: {getattr(exc, 'reason', exc)}); the reference numbers need it"
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return "lm-evaluation-harness is not installed (pip install -e '.[eval]')"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    import torch

    from gpt2 import cli
    from gpt2.configs import RunConfig
    from gpt2.eval import cli as eval_cli
    from gpt2.model.pretrained import build_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig.from_flags(vars(cli.parse_args(["--model", "gpt2", "--init-from", "gpt2", "--device", "cpu"])))
    model = build_model(cfg.model, "cpu")
    ckpt = work / "gpt2-124M.pt"
    torch.save({"model": model.state_dict(), "model_config": asdict(model.config)}, ckpt)
    metrics = eval_cli.evaluate_checkpoint(eval_cli.TOOL.parse_args(
        ["--device", args.device, "--data-dir", str(work / "data"), "--eval-tasks", "hellaswag,harness",
         "--eval-harness-tasks", "hellaswag", "--no-trackers"]), ckpt, ["hellaswag", "harness"])
    verdict = {name: {"expected": want, "got": metrics.get(name),
                      "ok": metrics.get(name) is not None and abs(metrics[name] - want) <= TOLERANCE}
               for name, want in EXPECTED.items()}
    print(json.dumps({"metrics": metrics, "verdict": verdict}))
    return 0 if all(v["ok"] for v in verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
