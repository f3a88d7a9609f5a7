"""The architecture as the folders tell it, checked: the layers import only
downwards, the CPU's libraries are named in gpt2/cpu/ alone, the run's
wiring has real types, and the checkpoint's keys live in one module."""

import ast
import re
from pathlib import Path

import pytest
import torch

from gpt2.run import checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"lib": 0, "gpt2": 1, "scripts": 2}  # each may import only from the layers below it (and itself)


def python_files(*folders):
    return sorted(path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py"))


def imported_packages(path):
    """The top-level package of every absolute import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_import_runs_up_the_layers(layer):
    upward = [f"{path.relative_to(REPO_ROOT)} imports {package}"
              for path in python_files(layer) for package in imported_packages(path)
              if package in LAYERS and LAYERS[package] > LAYERS[layer]]  # fmt: skip
    assert not upward


# The CPU's matrix-multiply libraries, by every name the code uses for them
# (cuBLAS and hipBLASLt are GPU libraries: \b keeps them out).
CPU_LIBRARIES = re.compile(r"\b(one-?dnn|mkldnn|mkl|openblas|blas)\b", re.IGNORECASE)


def test_only_the_cpu_room_names_a_matmul_library():
    files = [*python_files("gpt2"), *(REPO_ROOT / "gpt2").rglob("Kconfig")]
    naming = [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
              for path in files if "cpu" not in path.relative_to(REPO_ROOT / "gpt2").parts[:1]
              for number, line in enumerate(path.read_text().splitlines(), 1) if CPU_LIBRARIES.search(line)]  # fmt: skip
    assert not naming


def test_the_check_sees_a_library_named_outside_the_cpu_room():
    assert CPU_LIBRARIES.search("through oneDNN instead of BLAS")
    assert not CPU_LIBRARIES.search("the cuBLAS workspace and hipBLASLt")


def dataclass_fields(path):
    """(class, field, annotation) of every annotated class attribute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    yield node.name, item.target.id, ast.unparse(item.annotation)


def test_no_field_of_the_run_is_typed_object():
    untyped = [f"{path.relative_to(REPO_ROOT)}: {cls}.{name}: {annotation}"
               for path in python_files("gpt2") for cls, name, annotation in dataclass_fields(path)
               if re.search(r"\bobject\b", annotation)]  # fmt: skip
    assert not untyped


# A key of the file read by subscript or .get() on something named like a
# checkpoint or its state.
KEY_ACCESS = re.compile(r"""(checkpoint|ckpt|state)\w*(\[\s*|\.get\(\s*)["'](%s)["']""" % "|".join(
    (*checkpoint.REQUIRED_KEYS, "trackers", "cpu_matmul")))


def test_the_checkpoint_keys_are_named_in_one_module():
    """gpt2/run/checkpoint.py alone reads and writes the file's keys (the
    TrainState's own state_dict is its dataclass's fields)."""
    owners = {REPO_ROOT / "gpt2/run/checkpoint.py", REPO_ROOT / "gpt2/run/state.py"}
    elsewhere = [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
                 for path in python_files("gpt2", "scripts") if path not in owners
                 for number, line in enumerate(path.read_text().splitlines(), 1) if KEY_ACCESS.search(line)]  # fmt: skip
    assert not elsewhere


def test_a_checkpoint_with_the_key_set_written_before_the_trainer_still_resumes(tmp_path):
    """A file with exactly the keys gpt2/train.py wrote before the Trainer
    (commit 77c7276: checkpoint_state) loads, validates and restores."""
    from types import SimpleNamespace

    from gpt2.model.gpt import GPT, GPTConfig
    from gpt2.run.state import TrainState

    config = GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    optimizer.step()
    legacy = {
        "model": model.state_dict(), "model_config": vars(config).copy(), "optimizer": optimizer.state_dict(),
        "pruner": {}, "scaler": {}, "iter_num": 7, "best_val_loss": 3.25, "training_time": 12.5,
        "rng": [{"global": checkpoint.rng_state(), "batches": {"train_generator": torch.Generator().get_state()}}],
        "args": {"optimizer": "adamw", "pruning_method": "none"}, "trackers": {"runs": []}, "cpu_matmul": "blas",
    }  # fmt: skip
    torch.save(legacy, tmp_path / checkpoint.LATEST)

    loaded = checkpoint.load_checkpoint(tmp_path)
    fresh = GPT(config)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    state = TrainState()
    parts = {"model": fresh, "optimizer": fresh_optimizer, "pruner": SimpleNamespace(load_state_dict=None),
             "scaler": SimpleNamespace(load_state_dict=None)}  # empty states are not loaded  # fmt: skip
    checkpoint.Checkpointer(tmp_path, parts, record=dict).restore(loaded, state)
    assert state == TrainState(iter_num=7, best_val_loss=3.25, training_time=12.5)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert fresh_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert loaded.cpu_matmul == "blas" and loaded.trackers == {"runs": []} and len(loaded.rng) == 1
    loaded.check_compatible(vars(config), {"optimizer": "adamw", "pruning_method": "none"})
