"""INIT_FROM: the model a run starts from.  Empty: random weights (GPT's own
init).  gpt2, gpt2-medium, gpt2-large, gpt2-xl: OpenAI's weights from the
Hugging Face Hub (openai-community/<name>), downloaded once into Hugging
Face's cache (~/.cache/huggingface/hub, or HF_HOME), safetensors only.  Any
other value: a local folder in Hugging Face's format (config.json +
model.safetensors), such as one `make export` wrote.

The shape comes from the weights; the run's MODEL / N_LAYER / N_HEAD /
N_EMBD and BIAS must say the same (a mismatch is one error naming both),
BLOCK_SIZE may be smaller than the checkpoint's 1,024 positions (the
position table is cropped), DROPOUT is the run's.  The vocabulary keeps
GPT-2's 50,257 rows (gpt2/model/hf_format.py says why).  The model records
where it came from (`model.init_source`: the source and the sha256 of its
weights file), which the run's provenance keeps.
"""

from pathlib import Path

from gpt2.model.gpt import GPT, MODEL_SIZES
from gpt2.model.hf_format import CONFIG_FILE, WEIGHTS_FILE, FormatError, read_hf_config, read_hf_tensors, to_gpt2lab
from gpt2.data.sources import file_sha256
from lib.errors import UserError, first_line

HUB_ORG = "openai-community"


class PretrainedError(UserError):
    """INIT_FROM names weights that cannot be found or used."""


def hub_repo(name):
    """The Hub repository of a published size: 'gpt2' -> 'openai-community/gpt2'."""
    return f"{HUB_ORG}/{name}"


def download(name):
    """(config.json, model.safetensors) of OpenAI's `name` from the Hub,
    through huggingface_hub's cache: downloaded with a progress bar the
    first time, then read from the cache, also offline."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise PretrainedError(f"--init-from {name}: downloading needs huggingface_hub; pip install huggingface_hub, "
                              "or give a local folder") from None
    repo = hub_repo(name)
    try:
        return tuple(Path(hf_hub_download(repo, filename)) for filename in (CONFIG_FILE, WEIGHTS_FILE))
    except LocalEntryNotFoundError:
        raise PretrainedError(
            f"--init-from {name}: {repo} is not in the Hugging Face cache and the Hub cannot be reached; "
            f"on a machine with network run `hf download {repo} {CONFIG_FILE} {WEIGHTS_FILE}` (the same cache, "
            "HF_HOME), or give --init-from a local folder holding those two files"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        reason = first_line(exc)
        raise PretrainedError(f"--init-from {name}: cannot download {repo} ({reason[:200]})") from None


def weight_files(init_from):
    """(config.json, model.safetensors) that INIT_FROM names."""
    if init_from in MODEL_SIZES:
        return download(init_from)
    folder = Path(init_from).expanduser()
    if not folder.is_dir():
        raise PretrainedError(f"--init-from {init_from}: no such folder, nor one of {', '.join(MODEL_SIZES)}; "
                              "give a published GPT-2 or a folder with config.json and model.safetensors")
    files = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        other = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = f" (it has {', '.join(other[:3])}: only safetensors weights are read)" if other else ""
        raise PretrainedError(f"--init-from {init_from}: no {' or '.join(missing)} in that folder{hint}; "
                              "give a Hugging Face GPT-2 folder, e.g. one `make export` wrote")
    return files


def check_shape(init_from, weights_shape, gpt_config, model_cfg):
    """The run's model settings must describe the weights: one error naming both shapes."""
    run_shape = dict(n_layer=gpt_config.n_layer, n_head=gpt_config.n_head, n_embd=gpt_config.n_embd)
    theirs = {key: weights_shape[key] for key in run_shape}
    if run_shape != theirs:
        size = next((name for name, shape in MODEL_SIZES.items() if shape == theirs), None)
        fix = f"--model {size}" if size else (f"--model custom --n-layer {theirs['n_layer']} "
                                              f"--n-head {theirs['n_head']} --n-embd {theirs['n_embd']}")
        raise PretrainedError(
            f"--init-from {init_from}: the weights are {_shape(theirs)}, the run's model (--model "
            f"{model_cfg.model}) is {_shape(run_shape)}; set {fix} (MODEL in .config)"
        )
    if gpt_config.block_size > weights_shape["n_positions"]:
        raise PretrainedError(
            f"--init-from {init_from}: --block-size {gpt_config.block_size} exceeds the weights' "
            f"{weights_shape['n_positions']} positions; use --block-size {weights_shape['n_positions']} or less"
        )


def _shape(shape):
    return f"{shape['n_layer']} layers x {shape['n_head']} heads x {shape['n_embd']} wide"


def load_pretrained(init_from, model_cfg):
    """The GPT INIT_FROM names, on the CPU, shaped by `model_cfg` (the run's
    ModelConfig, checked against the weights), with `init_source` set."""
    config_path, weights_path = weight_files(init_from)
    gpt_config = model_cfg.gpt_config()
    try:
        weights_shape = read_hf_config(config_path)
        check_shape(init_from, weights_shape, gpt_config, model_cfg)
        state = to_gpt2lab(read_hf_tensors(weights_path, weights_shape), gpt_config.block_size, gpt_config.bias)
    except FormatError as exc:
        raise PretrainedError(f"--init-from {init_from}: {exc}") from None
    model = GPT(gpt_config)
    model.load_state_dict(state)
    model.init_source = {
        "init_from": init_from,
        "repo": hub_repo(init_from) if init_from in MODEL_SIZES else None,
        "path": str(weights_path.resolve()),
        "sha256": file_sha256(weights_path),
    }
    return model


def weights_difference(recorded):
    """For `make reproduce`: what differs between the INIT_FROM weights a
    run recorded (model.init_source) and what INIT_FROM names here; None
    when they are the same file."""
    try:
        _, weights_path = weight_files(recorded["init_from"])
    except PretrainedError as exc:
        return f"init-from: {exc}"
    digest = file_sha256(weights_path)
    if digest != recorded.get("sha256"):
        return (f"init-from {recorded['init_from']}: the run started from weights with sha256 "
                f"{str(recorded.get('sha256'))[:12]}..., {weights_path} has {digest[:12]}...")
    return None


def build_model(model_cfg, device):
    """The run's GPT on `device`: random (INIT_FROM empty) or loaded."""
    if not model_cfg.init_from:
        model = GPT(model_cfg.gpt_config())
        model.init_source = None
    else:
        model = load_pretrained(model_cfg.init_from, model_cfg)
    return model.to(device)
