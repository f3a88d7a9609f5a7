"""GPT-2 in Hugging Face's format, both ways: the tensor names and layouts of
transformers' GPT2LMHeadModel, and its config.json.  gpt2/model/pretrained.py
reads it (INIT_FROM), gpt2/model/export.py writes it (`make export`).

gpt2lab's parameters already carry Hugging Face's names; three things differ:
  * OpenAI's TensorFlow code used a "Conv1D" that stores each projection as
    (in, out), the transpose of torch's nn.Linear (out, in): c_attn, c_proj,
    c_fc are transposed on the way in and out;
  * the vocabulary: GPT-2 has 50,257 ids, gpt2lab pads a model trained from
    scratch to 50,304 rows (gpt2/model/gpt.py).  The padded rows are dropped
    on export; a model loaded from Hugging Face keeps its 50,257 rows (as
    nanoGPT does), so there are no padded ids whose zero logits would beat
    GPT-2's logits, which sit tens below zero;
  * a model without biases (BIAS=n) exports zero biases: the same function,
    in the one layout transformers reads.
Only torch and safetensors here; transformers is never imported.
"""

import json
from pathlib import Path

import torch

from gpt2.data.tokenizer import N_VOCAB
from lib.errors import UserError, first_line

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# nn.Linear weights stored transposed ("Conv1D") by Hugging Face's GPT-2.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Tensors some GPT-2 files carry that are no parameters: the causal-mask
# buffers of older transformers (OpenAI's own upload has them), and the
# output layer, tied to wte.
IGNORED = (".attn.bias", ".attn.masked_bias", "lm_head.weight")
PREFIX = "transformer."
# GPT2Config fields whose other values compute something gpt2lab's GPT does not.
REQUIRED_SETTINGS = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "reorder_and_upcast_attn": (False,),
    "add_cross_attention": (False,),
    "tie_word_embeddings": (True,),
}


class FormatError(UserError):
    """A file that is not GPT-2 in Hugging Face's format; str() says what is wrong."""


def require_safetensors():
    """The safetensors package, or a FormatError saying how to install it."""
    try:
        import safetensors
    except ImportError:
        raise FormatError("reading and writing model.safetensors needs the safetensors package: "
                          "pip install -e .[hf] (or pip install safetensors)") from None
    return safetensors


def read_hf_config(path):
    """The shape in a Hugging Face GPT-2 config.json: dict(n_layer, n_head,
    n_embd, n_positions, vocab_size).  FormatError for any other model."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not a readable config.json ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        kind = config.get("model_type", "no model_type") if isinstance(config, dict) else "not an object"
        raise FormatError(f"{path}: not a GPT-2 config (model_type {kind!r}, not 'gpt2'); "
                          "give an OpenAI GPT-2 (gpt2, gpt2-medium, gpt2-large, gpt2-xl) or a folder in its format")
    for key, allowed in REQUIRED_SETTINGS.items():
        if key in config and config[key] not in allowed:
            raise FormatError(f"{path}: {key} {config[key]!r} is not GPT-2's ({allowed[0]!r}); gpt2lab's GPT "
                              "computes only the original GPT-2")
    n_embd = config.get("n_embd", 768)
    if config.get("n_inner") not in (None, 4 * n_embd):
        raise FormatError(f"{path}: n_inner {config['n_inner']} is not 4 x n_embd; gpt2lab's MLP is 4x wide")
    shape = {key: config.get(key, default) for key, default in
             (("n_layer", 12), ("n_head", 12), ("n_embd", 768), ("n_positions", 1024), ("vocab_size", N_VOCAB))}
    if shape["vocab_size"] != N_VOCAB:
        raise FormatError(f"{path}: vocab_size {shape['vocab_size']}, not GPT-2's {N_VOCAB}; "
                          "gpt2lab uses GPT-2's tokenizer")
    return shape


def expected_shapes(shape):
    """name -> shape of every tensor a Hugging Face GPT-2 of `shape` holds
    (names without the 'transformer.' prefix, Conv1D layout)."""
    d, positions = shape["n_embd"], shape["n_positions"]
    out = {"wte.weight": (N_VOCAB, d), "wpe.weight": (positions, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(shape["n_layer"]):
        h = f"h.{i}."
        out.update({
            h + "ln_1.weight": (d,), h + "ln_1.bias": (d,), h + "ln_2.weight": (d,), h + "ln_2.bias": (d,),
            h + "attn.c_attn.weight": (d, 3 * d), h + "attn.c_attn.bias": (3 * d,),
            h + "attn.c_proj.weight": (d, d), h + "attn.c_proj.bias": (d,),
            h + "mlp.c_fc.weight": (d, 4 * d), h + "mlp.c_fc.bias": (4 * d,),
            h + "mlp.c_proj.weight": (4 * d, d), h + "mlp.c_proj.bias": (d,),
        })  # fmt: skip
    return out


def read_hf_tensors(path, shape):
    """The tensors of a GPT-2 model.safetensors, named without the
    'transformer.' prefix, each checked against `shape` (read_hf_config).
    FormatError naming the missing, unexpected or misshapen tensors."""
    safetensors = require_safetensors()
    SafetensorError, safe_open = safetensors.SafetensorError, safetensors.safe_open
    expected = expected_shapes(shape)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
                if name.endswith(IGNORED) and name not in expected:
                    continue
                tensors[name] = f.get_tensor(key)
    except (OSError, SafetensorError) as exc:
        reason = first_line(exc)
        raise FormatError(f"{path}: not a readable safetensors file ({reason[:200]})") from None
    problems = [f"missing {_list(sorted(set(expected) - set(tensors)))}" if set(expected) - set(tensors) else "",
                f"unexpected {_list(sorted(set(tensors) - set(expected)))}" if set(tensors) - set(expected) else ""]
    problems += [f"{name} is {tuple(t.shape)}, not {expected[name]}" for name, t in tensors.items()
                 if name in expected and tuple(t.shape) != expected[name]]
    problems = [p for p in problems if p]
    if problems:
        raise FormatError(f"{path}: not the GPT-2 of its config.json ({'; '.join(problems[:3])})")
    return tensors


def _list(names, most=4):
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def to_gpt2lab(tensors, block_size, bias):
    """A gpt2lab GPT state_dict from Hugging Face tensors (read_hf_tensors):
    Conv1D weights transposed, the position table cropped to `block_size`
    (nanoGPT's crop_block_size), lm_head tied to wte.  Without `bias` the
    biases must be zeros (they are left out)."""
    state = {}
    for name, tensor in tensors.items():
        if name == "wpe.weight":
            tensor = tensor[:block_size]
        elif name.endswith(CONV1D):
            tensor = tensor.t()
        if name.endswith(".bias") and not bias:
            if torch.count_nonzero(tensor):
                raise FormatError(f"the weights have biases ({name} is not zero), and BIAS is off; "
                                  "set BIAS=y (--bias): OpenAI's GPT-2 has biases")
            continue
        state[PREFIX + name] = tensor.float().contiguous()
    state["lm_head.weight"] = state[PREFIX + "wte.weight"]
    return state


def to_hf(model):
    """Hugging Face's tensors of a gpt2lab GPT, as GPT2LMHeadModel's
    save_pretrained writes them: 'transformer.' names, Conv1D layout, the
    50,257 real rows of wte (the padding rows dropped), no lm_head.weight
    (tied), zeros where a model without biases has none."""
    config = model.config
    d = config.n_embd
    state = {k: v.detach() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    out = {}
    for name, shape in expected_shapes({"n_layer": config.n_layer, "n_embd": d,
                                        "n_positions": config.block_size}).items():
        tensor = state.get(PREFIX + name)
        if tensor is None:  # a bias of a BIAS=n model
            tensor = torch.zeros(shape, dtype=state[PREFIX + "wte.weight"].dtype)
        elif name == "wte.weight":
            tensor = tensor[:N_VOCAB]
        elif name.endswith(CONV1D):
            tensor = tensor.t()
        out[PREFIX + name] = tensor.float().contiguous().cpu()
    return out


def hf_config(config):
    """config.json of a GPT2LMHeadModel with gpt2lab's GPTConfig `config`."""
    p = config.dropout
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": N_VOCAB,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": p,
        "embd_pdrop": p,
        "attn_pdrop": p,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "bos_token_id": N_VOCAB - 1,
        "eos_token_id": N_VOCAB - 1,
        "tie_word_embeddings": True,
        "use_cache": True,
        "dtype": "float32",
    }
