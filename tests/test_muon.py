"""lib/optim/muon.py: the hidden matrices get orthogonalised momentum (singular
values near 1), everything else AdamW, and two data-parallel processes end
with the weights of one process taking the same global batch."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from gpt2.data.batches import Batches
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train import main
from lib.optim import OptimizerConfig, build_optimizer, optimizer_config
from lib.optim.muon import Muon, newton_schulz
from train_support import TINY, shakespeare_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def muon(model, lr=1e-3, muon_lr=0.02, weight_decay=0.0):
    settings = OptimizerConfig(optimizer="muon", learning_rate=lr, weight_decay=weight_decay, beta1=0.9, beta2=0.95)
    return build_optimizer(model, settings, optimizer_config("muon", {"muon_lr": muon_lr, "muon_momentum": 0.95}))


def test_update_of_a_matrix_is_orthogonal_within_newton_schulz_tolerance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256, bias=False), nn.Linear(256, 1))  # hidden (256, 64), then the head
    optimizer = muon(model, muon_lr=0.02)
    hidden = model[0].weight
    before = hidden.detach().clone()
    hidden.grad = torch.randn(256, 64)
    model[1].weight.grad, model[1].bias.grad = torch.randn(1, 256), torch.randn(1)
    optimizer.step()
    # p -= muon_lr * sqrt(rows / cols) * O (no weight decay here)
    update = (before - hidden.detach()) / (0.02 * 2.0)
    singular = torch.linalg.svdvals(update)
    # Five quintic steps give U S' V^T with S' in about [0.7, 1.2], not exactly
    # 1 (Keller Jordan: "S'_ii ~ Uniform(0.5, 1.5)"); the gradient's own spread is 3x.
    assert singular.min() > 0.6 and singular.max() < 1.25
    gradient = torch.linalg.svdvals(hidden.grad)
    assert gradient.max() / gradient.min() > 2.5


def test_newton_schulz_keeps_the_singular_vectors():
    torch.manual_seed(1)
    g = torch.randn(32, 96)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    o = newton_schulz(g).float()
    # U^T O V is diagonal (S'), up to bfloat16's rounding.
    inner = u.T @ o @ vh.T
    off_diagonal = inner - torch.diag(torch.diagonal(inner))
    assert off_diagonal.abs().max() < 0.05 and torch.diagonal(inner).min() > 0.6


def test_block_matrices_go_to_muon_embeddings_head_norms_and_biases_to_adamw():
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    optimizer = muon(model, weight_decay=0.1)
    assert isinstance(optimizer, Muon)
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [(g.get("use_muon", False), g["weight_decay"], sorted(names[id(p)] for p in g["params"]))
              for g in optimizer.param_groups]  # fmt: skip
    (muon_group,) = [g for g in groups if g[0]]
    assert muon_group[2] == sorted(f"transformer.h.{i}.{m}.weight" for i in (0, 1)
                                   for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))  # fmt: skip
    adamw = {name: decay for use, decay, params in groups if not use for name in params}
    # The tied head / token embedding once, the position embedding, both decayed.
    assert {name for name, decay in adamw.items() if decay} == {"transformer.wte.weight", "transformer.wpe.weight"}
    assert all(names_1d.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight"))
               for names_1d, decay in adamw.items() if not decay)  # fmt: skip
    assert len(adamw) + len(muon_group[2]) == len(list(model.parameters()))
    # Muon's lr follows the loop's (AdamW's) lr, scaled to MUON_LR at the peak.
    assert optimizer.param_groups[0]["lr_ratio"] == pytest.approx(0.02 / 1e-3)


def test_adamw_part_matches_torch_adamw():
    torch.manual_seed(2)
    ours, theirs = nn.LayerNorm(8), nn.LayerNorm(8)
    theirs.load_state_dict(ours.state_dict())
    a = muon(ours, lr=1e-2)
    b = torch.optim.AdamW(theirs.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    for _ in range(5):
        x = torch.randn(4, 8)
        for model, opt in ((ours, a), (theirs, b)):
            model(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_two_processes_end_with_the_weights_of_one_with_the_same_global_batch(
    shakespeare_data, shakespeare_path, tmp_path, monkeypatch
):
    # 2 micro-batches per step in total: one per rank, or both in one process.
    flags = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--optimizer", "muon",
             "--max-iters", "1", "--eval-interval", "1", "--sample-interval", "0", "--seed", "7",
             "--gradient-accumulation-steps", "2", "--cpu-matmul", "blas"]  # fmt: skip
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "gpt2/train.py", *flags, "--out-dir", str(tmp_path / "ddp")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr

    # One process, the same global batch: rank r draws from a generator seeded
    # seed + 1 + r (gpt2/run/setup.py), so micro-step r does here too.
    ranks = [torch.Generator().manual_seed(7 + 1 + rank) for rank in (0, 1)]
    drawn = []

    def next_train(self):
        drawn.append(None)
        return self._read("train", ranks[(len(drawn) - 1) % 2])

    monkeypatch.setattr(Batches, "next_train", next_train)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main([*flags, "--out-dir", str(tmp_path / "single")]) == 0
    assert len(drawn) == 1 * 2

    # Bitwise after a step, Muon's and AdamW's parts alike.  (Over more steps
    # the two drift apart in the last bits: DDP sums the gradients then halves,
    # one process adds halves, and bfloat16's Newton-Schulz can round such a
    # difference up to an ulp of the update; about 1e-4 after 3 steps here.)
    weights = [torch.load(tmp_path / d / "ckpt.pt", weights_only=True)["model"] for d in ("ddp", "single")]
    for name, w in weights[1].items():
        assert torch.equal(weights[0][name], w), name
