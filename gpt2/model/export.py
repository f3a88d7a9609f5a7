"""`make export`: a gpt2lab checkpoint as a Hugging Face folder that
transformers' AutoModelForCausalLM / AutoTokenizer.from_pretrained load
offline, and lm-evaluation-harness, vLLM or the Hub after them:

  config.json              GPT2Config with the run's shape (gpt2/model/hf_format.py)
  model.safetensors        Conv1D layout, GPT-2's 50,257 rows, wte only (lm_head is tied)
  generation_config.json   <|endoftext|> as BOS and EOS
  vocab.json, merges.txt   GPT-2's BPE, the very files the offline tokenizer reads
  tokenizer_config.json    GPT2Tokenizer, the run's context length
  README.md                a model card: settings, data, losses, sparsity

A pruned model is written with its zeros (dense tensors; the card states
the sparsity).  Needs safetensors (and huggingface_hub for --export-hub-repo),
not transformers.  The folder is written beside OUT and renamed into place
when complete (lib/atomic.py atomic_folder): an interrupted export leaves
no OUT that looks complete.
"""

import json
import math
import shutil
from pathlib import Path

import torch

from gpt2.data.tokenizer import N_VOCAB, hf_tokenizer_files
from gpt2.model.hf_format import CONFIG_FILE, WEIGHTS_FILE, FormatError, hf_config, require_safetensors, to_hf
from gpt2.run.batch_size import recorded_tokens_per_iter
from gpt2.run.checkpoint import load_model
from lib.atomic import atomic_folder, remove_stale_folders
from lib.errors import UserError, first_line
from lib.pruning import prunable_weights, sparsity

EOT = N_VOCAB - 1
# The files of a Hugging Face model folder: one of them in OUT means a model is there.
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, "pytorch_model.bin", "model.safetensors.index.json")


class ExportError(UserError):
    """The checkpoint or the output folder cannot be used; str() says why and what to do."""


def load_checkpoint_model(path):
    """(GPT, Checkpoint) of a gpt2lab checkpoint, on the CPU, with finite weights."""
    model, checkpoint = load_model(path)
    require_finite(model, path)
    return model, checkpoint


def require_finite(model, path):
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ExportError(f"{path}: {bad[0]} holds inf or NaN; the checkpoint is damaged or the run diverged")


def check_out_folder(out, overwrite):
    """Refuse an OUT that holds anything but an earlier export unless `overwrite`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--export-dir {out} is a file; give a folder (it is created)")
    if overwrite or not out.is_dir() or not any(out.iterdir()):
        return
    held = [name for name in MODEL_FILES if (out / name).exists()]
    what = f"another model ({', '.join(held)})" if held else "other files"
    raise ExportError(f"--export-dir {out} already holds {what}; pass --overwrite to replace it, or choose another folder")


def tokenizer_config(block_size):
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": block_size,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
    }


def generation_config():
    return {"bos_token_id": EOT, "eos_token_id": EOT, "pad_token_id": EOT, "do_sample": False}


def _number(value, digits=4):
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def model_card(model, tensors, checkpoint, ckpt_path, name):
    """README.md: what a reader of the Hub page needs to know about the run."""
    args = checkpoint.args or {}
    config = model.config
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    params = sum(t.numel() for t in tensors.values())
    start = args.get("init_from") or "random initialization"
    per_iter = recorded_tokens_per_iter({"block_size": config.block_size, **args})
    tokens = (checkpoint.iter_num or 0) * per_iter if per_iter else None
    dataset = args.get("dataset", "-") + (f" (from {Path(args['data_input']).name})" if args.get("data_input") else "")
    rows = [
        ("Shape", f"{config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, "
                  f"context {config.block_size} tokens, GPT-2 tokenizer ({N_VOCAB:,} ids)"),
        ("Parameters", f"{params / 1e6:.2f}M (the token embedding is tied to the output layer)"),
        ("Started from", start),
        ("Data", dataset),
        ("Steps", f"{checkpoint.iter_num if checkpoint.iter_num is not None else '-'}" + (f" ({tokens:,} tokens)" if tokens else "")),
        ("Best validation loss", _number(checkpoint.best_val_loss)),
        ("Optimizer", f"{args.get('optimizer', '-')}, learning rate {args.get('learning_rate', '-')}"),
        ("Pruning", f"{args.get('pruning_method', 'none')}"),
        ("Sparsity", f"{sparsity(model):.2%} of the Linear weights in the blocks are zero "
                     f"({zeros:,} of {total:,}), stored as dense zeros"),
        ("Training time", f"{_number(checkpoint.training_time, 0)} s"),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    settings = "\n".join(f"--{key.replace('_', '-')}={json.dumps(value)}" for key, value in sorted(args.items()))
    return f"""---
library_name: transformers
pipeline_tag: text-generation
license: mit
tags:
- gpt2
- gpt2lab
---

# {name}

A GPT-2 language model trained with gpt2lab, exported from `{Path(ckpt_path).name}`.

| | |
|---|---|
{table}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=50, do_sample=True, top_k=200)[0]))
```

## Settings

The run's flags (gpt2/train.py), as recorded in its checkpoint:

```
{settings}
```
"""


def write_json(path, value):
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def export(ckpt, out, overwrite=False, log=print, loaded=None):
    """Write the Hugging Face folder `out` from the checkpoint `ckpt`;
    returns (out, bytes written).  `loaded`: the (GPT, Checkpoint) of `ckpt`
    when the caller holds them already (make eval's harness task), so the
    file is not read twice."""
    try:
        require_safetensors()
    except FormatError as exc:
        raise ExportError(str(exc)) from None
    from safetensors.torch import save_file

    out = Path(out)
    check_out_folder(out, overwrite)
    if loaded:
        model, checkpoint = loaded
        require_finite(model, ckpt)
    else:
        model, checkpoint = load_checkpoint_model(ckpt)
    tokenizer_files = hf_tokenizer_files()
    tensors = to_hf(model)
    remove_stale_folders(out)  # what an export killed earlier left beside it
    with atomic_folder(out) as folder:
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        write_json(folder / CONFIG_FILE, hf_config(model.config))
        write_json(folder / "generation_config.json", generation_config())
        write_json(folder / "tokenizer_config.json", tokenizer_config(model.config.block_size))
        for name, source in tokenizer_files.items():
            shutil.copyfile(source, folder / name)
        (folder / "README.md").write_text(model_card(model, tensors, checkpoint, ckpt, out.name), encoding="utf-8")
    size = sum(f.stat().st_size for f in out.iterdir())
    log(f"exported {ckpt} (iter {checkpoint.iter_num}) to {out}/: {size / 1e6:.1f} MB")
    return out, size


def push_to_hub(folder, repo, log=print):
    """Upload an exported folder to the Hub repository `repo` (created if
    missing) with huggingface_hub's upload API; needs network and a token."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise ExportError("--export-hub-repo needs huggingface_hub; pip install huggingface_hub") from None
    api = HfApi()
    try:
        api.create_repo(repo, repo_type="model", exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                                 commit_message="gpt2lab export")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        reason = first_line(exc)
        raise ExportError(f"--export-hub-repo {repo}: upload failed ({reason[:200]}); check the network and "
                          "your token (`hf auth login`); the export itself is in " + str(folder)) from None
    log(f"uploaded {folder}/ to https://huggingface.co/{repo} ({getattr(info, 'commit_url', '')})")
