"""Hugging Face in and out (gpt2/model/pretrained.py, hf_format.py, export.py):
a tiny GPT2LMHeadModel made by transformers -> --init-from -> the same logits
and loss; fine-tune; `make export` -> transformers loads it, with the same
logits, tokens and greedy text as gpt2lab; the padded vocabulary; a pruned
run's zeros; and each bad input as one error line.  No network: the Hub is
never reached (HF_HUB_OFFLINE=1, tests/conftest.py)."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_support import TINY, shakespeare_flags

transformers = pytest.importorskip("transformers")

from gpt2 import cli, sample  # noqa: E402
from gpt2.configs import RunConfig  # noqa: E402
from gpt2.cpu.fast_paths import use_cpu_fast_paths  # noqa: E402
from gpt2.data.tokenizer import N_VOCAB, gpt2_encoding  # noqa: E402
from gpt2.model import export as export_module  # noqa: E402
from gpt2.model.generate import generate  # noqa: E402
from gpt2.model.gpt import GPT, PADDED_VOCAB_SIZE, GPTConfig  # noqa: E402
from gpt2.model.pretrained import build_model  # noqa: E402
from gpt2.run.checkpoint import LATEST  # noqa: E402
from gpt2.train import main as train_main  # noqa: E402
from lib.trackers.journal import journal_path, read_journal  # noqa: E402
from scripts.export import main as export_main  # noqa: E402

HF_SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64)  # TINY's shape, 64 positions (TINY uses 32)
PARAGRAPH = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?"""


def hf_model(seed=0, far_below_zero=False):
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_SHAPE)).eval()
    with torch.no_grad():  # transformers initializes biases to zero; OpenAI's are not
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.normal_(0.0, 0.02)
    if far_below_zero:
        # Like OpenAI's GPT-2, whose logits sit tens below zero: every
        # token's row shares a component that ln_f's bias drives down.
        with torch.no_grad():
            model.transformer.wte.weight[:, 0] = 3.0
            model.transformer.ln_f.bias[0] = -10.0
            model.transformer.ln_f.weight.mul_(0.2)
    return model


def save_hf(model, folder):
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_hf(hf_model(), tmp_path_factory.mktemp("hf-tiny"))


def model_config(*flags):
    return RunConfig.from_flags(vars(cli.parse_args([*TINY, *flags]))).model


def tokens(seed=1, length=32):
    return torch.randint(0, N_VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))


def hf_logits_and_loss(model, idx):
    with torch.no_grad():
        out = model(idx[:, :-1], labels=idx[:, :-1])  # transformers shifts the labels itself
    return out.logits, out.loss


def gpt2lab_logits_and_loss(model, idx):
    with torch.no_grad():
        logits, _ = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), idx[:, 1:-1].reshape(-1))
        _, train_loss = model(idx[:, :-2].contiguous(), targets=idx[:, 1:-1].contiguous())  # the training path (chunked on CPU)
    return logits, loss, train_loss


def test_init_from_a_hf_folder_computes_hfs_logits_and_loss(hf_folder):
    model = build_model(model_config("--bias", "--init-from", str(hf_folder)), "cpu").eval()
    assert model.transformer.wpe.weight.shape[0] == 32  # cropped from 64 positions to --block-size
    assert model.lm_head.weight.shape[0] == N_VOCAB  # GPT-2's rows, no padding
    weights = hf_folder / "model.safetensors"
    assert model.init_source["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert model.init_source["init_from"] == str(hf_folder)
    idx = tokens()
    theirs, their_loss = hf_logits_and_loss(transformers.AutoModelForCausalLM.from_pretrained(hf_folder).eval(), idx)
    use_cpu_fast_paths(model, "blas", chunked_loss=True)
    ours, our_loss, train_loss = gpt2lab_logits_and_loss(model, idx)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert our_loss.item() == pytest.approx(their_loss.item(), abs=1e-5)
    assert train_loss.item() == pytest.approx(their_loss.item(), abs=1e-5)


def test_pretrained_logits_far_below_zero_put_no_mass_on_padded_ids(tmp_path):
    """The padded-vocabulary trap: zero rows after GPT-2's 50,257 would get
    logit 0, above every real token of a model whose logits sit tens below
    zero.  gpt2lab keeps 50,257 rows for pretrained weights: no mass there,
    and the loss over the real ids is Hugging Face's."""
    reference = hf_model(seed=3, far_below_zero=True)
    folder = save_hf(reference, tmp_path / "deep")
    idx = tokens(seed=4)
    their_logits, their_loss = hf_logits_and_loss(reference, idx)
    assert their_logits.max() < -15  # really far below zero, like OpenAI's GPT-2
    model = build_model(model_config("--bias", "--init-from", str(folder)), "cpu").eval()
    for chunked in (False, True):  # the plain loss, then the CPU fast path's chunked one
        use_cpu_fast_paths(model, "blas", chunked_loss=chunked)
        logits, loss, train_loss = gpt2lab_logits_and_loss(model, idx)
        padded_mass = torch.softmax(logits.double(), dim=-1)[..., N_VOCAB:].sum(dim=-1).max().item()
        assert padded_mass < 1e-6
        assert loss.item() == pytest.approx(their_loss.item(), abs=1e-5)
        assert train_loss.item() == pytest.approx(their_loss.item(), abs=1e-5)
    # What the test guards against: the same weights zero-padded to 50,304 rows.
    padded = GPT(GPTConfig(**{**model.config.__dict__, "vocab_size": PADDED_VOCAB_SIZE})).eval()
    state = model.state_dict()
    state["lm_head.weight"] = torch.cat([state["lm_head.weight"], torch.zeros(PADDED_VOCAB_SIZE - N_VOCAB, 32)])
    state["transformer.wte.weight"] = state["lm_head.weight"]
    padded.load_state_dict(state)
    logits, _, _ = gpt2lab_logits_and_loss(padded, idx)
    assert torch.softmax(logits.double(), dim=-1)[..., N_VOCAB:].sum(dim=-1).min() > 0.99


def test_generation_never_draws_a_padded_id():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.transformer.ln_f.bias[0] = 5.0
        model.lm_head.weight[N_VOCAB:, 0] = 20.0  # padded rows: logits about +100, the top ones
        logits, _ = model(torch.tensor([[0, 1, 2]]))
    assert logits[0, -1].argmax() >= N_VOCAB  # the model itself prefers them
    idx = torch.tensor([[0, 1, 2]])
    greedy = generate(model, idx, 8, temperature=0)
    drawn = generate(model, idx, 8, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert greedy.max() < N_VOCAB and drawn.max() < N_VOCAB


@pytest.fixture
def run(shakespeare_data, shakespeare_path, tmp_path, capsys):
    """gpt2/train.py main() on the tiny model; returns (exit code, out_dir, stderr)."""

    def train(*flags, out="out"):
        out_dir = tmp_path / out
        code = train_main([*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path),
                           "--out-dir", str(out_dir), "--sample-interval", "0", *flags])
        return code, out_dir, capsys.readouterr().err

    return train


def test_fine_tune_then_export_loads_in_transformers_with_the_same_logits_tokens_and_text(
        run, hf_folder, tmp_path, capsys):
    code, out_dir, err = run("--bias", "--init-from", str(hf_folder), "--max-iters", "20", "--eval-interval", "20")
    assert code == 0, err
    assert export_main(["--ckpt", str(out_dir / LATEST), "--export-dir", str(tmp_path / "export")]) == 0
    folder = tmp_path / "export"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "generation_config.json", "merges.txt", "model.safetensors",
        "tokenizer_config.json", "vocab.json"]  # fmt: skip
    assert not list(tmp_path.glob(".export*"))  # no temporary left beside it
    tensors = load_file(folder / "model.safetensors")
    assert tensors["transformer.wte.weight"].shape == (N_VOCAB, 32) and "lm_head.weight" not in tensors
    assert tensors["transformer.h.0.mlp.c_fc.weight"].shape == (32, 128)  # Conv1D: (in, out)

    ours, state = export_module.load_checkpoint_model(out_dir / LATEST)
    fine_tuned = ours.state_dict()["transformer.h.0.attn.c_attn.weight"]
    assert not torch.equal(fine_tuned, load_file(hf_folder / "model.safetensors")["transformer.h.0.attn.c_attn.weight"].t())
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()  # tied
    idx = tokens(seed=2)
    hf_logits, _ = hf_logits_and_loss(theirs, idx)
    our_logits, _, _ = gpt2lab_logits_and_loss(ours, idx)
    torch.testing.assert_close(our_logits, hf_logits, atol=1e-5, rtol=0)
    # ... and the export is itself an --init-from folder: the same model again.
    again = build_model(model_config("--bias", "--init-from", str(folder)), "cpu").eval()
    torch.testing.assert_close(gpt2lab_logits_and_loss(again, idx)[0], our_logits, atol=1e-6, rtol=0)

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    ids = gpt2_encoding().encode_ordinary(PARAGRAPH)
    assert tokenizer(PARAGRAPH)["input_ids"] == ids
    assert tokenizer.decode(ids) == PARAGRAPH

    # Greedy text: `make sample` (gpt2/sample.py) against transformers' generate.
    capsys.readouterr()
    assert sample.main(["--ckpt", str(out_dir / LATEST), "--prompt", "ROMEO:", "--temperature", "0",
                        "--num-samples", "1", "--max-new-tokens", "12", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.split("\n" + sample.SEPARATOR + "\n")[0]
    prompt = torch.tensor([tokenizer("ROMEO:")["input_ids"]])
    generated = theirs.generate(prompt, max_new_tokens=12, do_sample=False)
    assert printed == tokenizer.decode(generated[0])

    # The run's record names where it started (make reproduce compares it).
    start = next(r for r in read_journal(journal_path(out_dir)) if r["kind"] == "start")
    weights = hf_folder / "model.safetensors"
    assert start["config"]["provenance"]["init_from"] == {
        "init_from": str(hf_folder), "repo": None, "path": str(weights.resolve()),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert f"--init-from={hf_folder}" in start["config"]["train_args"]

    card = (folder / "README.md").read_text()
    assert f"--init-from={json.dumps(str(hf_folder))}" in card and "| Steps | 20" in card
    assert f"| Best validation loss | {state['best_val_loss']:.4f} |" in card
    assert "| Sparsity | 0.00%" in card


def test_a_pruned_run_exports_its_zeros_and_its_padded_rows_are_dropped(run, tmp_path):
    code, out_dir, err = run("--max-iters", "8", "--eval-interval", "8", "--pruning-method", "magnitude",
                             "--target-sparsity", "0.5", "--pruning-warmup", "2", "--pruning-ramp-iters", "4",
                             "--pruning-interval", "1", "--total-batch-tokens", "256")  # fmt: skip
    assert code == 0, err
    assert export_main(["--ckpt", str(out_dir / LATEST), "--export-dir", str(tmp_path / "pruned")]) == 0
    # 8 steps of the total's 256 tokens (not batch 4 x block 32: the accumulation comes from the total)
    assert "| Steps | 8 (2,048 tokens) |" in (tmp_path / "pruned" / "README.md").read_text()
    ours, _ = export_module.load_checkpoint_model(out_dir / LATEST)
    assert ours.lm_head.weight.shape[0] == PADDED_VOCAB_SIZE  # trained from scratch: padded
    tensors = load_file(tmp_path / "pruned" / "model.safetensors")
    for i in range(2):
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            exported = tensors[f"transformer.h.{i}.{name}.weight"]
            trained = ours.state_dict()[f"transformer.h.{i}.{name}.weight"]
            assert torch.equal(exported, trained.t())  # the very zeros, Conv1D layout
            assert (exported == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert "| Sparsity | 50.00%" in (tmp_path / "pruned" / "README.md").read_text()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    idx = tokens(seed=5, length=16)
    our_logits, _, _ = gpt2lab_logits_and_loss(ours, idx)
    hf_logits, _ = hf_logits_and_loss(theirs, idx)  # no bias in the run: exported as zeros
    torch.testing.assert_close(our_logits[..., :N_VOCAB], hf_logits, atol=1e-5, rtol=0)


def _bad_folder(tmp_path, kind, hf_folder):
    folder = tmp_path / kind
    folder.mkdir()
    config = json.loads((hf_folder / "config.json").read_text())
    tensors = load_file(hf_folder / "model.safetensors")
    if kind == "llama":
        config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32}
    elif kind == "missing":
        del tensors["transformer.h.1.mlp.c_fc.weight"]
    elif kind == "shapes":
        tensors["transformer.h.0.attn.c_attn.weight"] = torch.zeros(32, 64)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "model.safetensors")
    return str(folder)


@pytest.mark.parametrize("kind, flags, message", [
    ("llama", ["--bias"], "not a GPT-2 config (model_type 'llama'"),
    ("missing", ["--bias"], "missing h.1.mlp.c_fc.weight"),
    ("shapes", ["--bias"], "h.0.attn.c_attn.weight is (32, 64), not (32, 96)"),
    ("hf", ["--bias", "--n-layer", "3"], "the weights are 2 layers x 2 heads x 32 wide, the run's model "
                                         "(--model custom) is 3 layers x 2 heads x 32 wide"),
    ("hf", ["--no-bias"], "the weights have biases"),
    ("hf", ["--bias", "--block-size", "128"], "--block-size 128 exceeds the weights' 64 positions"),
    ("gpt2", ["--bias"], "openai-community/gpt2 is not in the Hugging Face cache"),
    ("nowhere", ["--bias"], "no such folder"),
])  # fmt: skip
def test_bad_init_from_is_one_error_line_and_writes_nothing(run, hf_folder, tmp_path, kind, flags, message):
    source = {"hf": str(hf_folder), "gpt2": "gpt2", "nowhere": str(tmp_path / "nowhere")}.get(kind)
    source = source or _bad_folder(tmp_path, kind, hf_folder)
    code, out_dir, err = run(*flags, "--init-from", source, "--max-iters", "2")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --init-from ") and message in lines[0], err
    assert not (out_dir / LATEST).exists()


def test_init_from_with_resume_of_another_shape_is_refused(run, hf_folder):
    code, out_dir, err = run("--max-iters", "2", "--eval-interval", "2")  # random init, padded vocabulary
    assert code == 0, err
    before = (out_dir / LATEST).read_bytes()
    code, _, err = run("--bias", "--init-from", str(hf_folder), "--resume", "--max-iters", "4")
    assert code == 1 and err.count("\n") == 1
    assert "error: --resume: the checkpoint was trained with other settings (vocab_size 50304 -> 50257" in err
    assert (out_dir / LATEST).read_bytes() == before


def test_bad_exports_are_one_error_line_and_leave_out_as_it_was(run, tmp_path, capsys, monkeypatch):
    code, out_dir, err = run("--max-iters", "2", "--eval-interval", "2")
    assert code == 0, err
    out = tmp_path / "export"

    def export(*flags):
        code = export_main(["--ckpt", str(out_dir / LATEST), "--export-dir", str(out), *flags])
        return code, capsys.readouterr().err

    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((out_dir / LATEST).read_bytes()[:5000])
    code = export_main(["--ckpt", str(damaged), "--export-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: cannot read ") and err.count("\n") == 1
    assert not out.exists()

    out.mkdir()
    (out / "config.json").write_text("{}")  # another model
    code, err = export()
    assert code == 1 and "already holds another model (config.json); pass --overwrite" in err
    assert (out / "config.json").read_text() == "{}" and len(list(out.iterdir())) == 1

    # Killed half-way through writing: OUT keeps the old folder, no temporary is left.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "generation_config", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export("--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir() if "export" in p.name) == ["export"]
    assert (out / "config.json").read_text() == "{}"
    monkeypatch.undo()

    code, err = export("--overwrite")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"


def test_reproduce_finds_other_starting_weights(hf_folder, tmp_path):
    from scripts.experiments.reproduce import machine_differences

    model = build_model(model_config("--bias", "--init-from", str(hf_folder)), "cpu")
    recorded = dict(model.init_source)  # what the run's provenance keeps
    assert not [d for d in machine_differences({"init_from": recorded}, None) if "init-from" in d]
    moved = tmp_path / "hf"
    shutil.copytree(hf_folder, moved)
    tensors = load_file(moved / "model.safetensors")
    tensors["transformer.ln_f.bias"] += 1
    save_file(tensors, moved / "model.safetensors")
    found = machine_differences({"init_from": {**recorded, "init_from": str(moved)}}, None)
    assert any(d.startswith(f"init-from {moved}: the run started from weights with sha256") for d in found), found


def test_a_hub_name_offline_reads_huggingface_hubs_cache(hf_folder, monkeypatch, tmp_path):
    """`--init-from gpt2` offline, with openai-community/gpt2 in the cache
    (here the tiny model, laid out as huggingface_hub's cache keeps a
    download): loaded from there, and recorded with its repository."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--openai-community--gpt2" / "snapshots" / ("0" * 40)
    shutil.copytree(hf_folder, snapshot)
    (cache / "models--openai-community--gpt2" / "refs").mkdir()
    (cache / "models--openai-community--gpt2" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model = build_model(model_config("--bias", "--init-from", "gpt2"), "cpu")
    assert model.init_source["repo"] == "openai-community/gpt2"
    assert model.init_source["path"] == str((snapshot / "model.safetensors").resolve())
