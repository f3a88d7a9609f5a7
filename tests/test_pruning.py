"""lib/pruning: each method reaches its target sparsity on schedule, keeps
pruned weights at zero, never touches embeddings or the tied head, and
resumes exactly from a checkpoint; the registry, PruningConfig and the
Kconfig tree agree."""

import dataclasses
import io
import math

import pytest
import torch
from torch import nn

from lib.kconfig import load_tree
from lib.optim import OptimizerConfig, build_optimizer, optimizer_config
from lib.options import options
from lib.optim._prune_scores import SCORES
from lib.pruning import (
    MASKS_FILE,
    PruningConfig,
    build_pruner,
    layer_sparsity,
    load_masks,
    prunable_weights,
    pruner_class,
    pruning_methods,
    save_masks,
    sparsity,
)
from lib.pruning._base import keep_mask

VOCAB, DIM = 32, 16
# 3 does not divide 20
SCHEDULE = dict(target_sparsity=0.7, pruning_warmup=5, pruning_ramp_iters=20, pruning_interval=3,
                pruning_schedule="zhu-gupta", pruning_layer_adaptive=False)
END = 5 + 20
# method -> optimizer it runs with ("state" needs adamwprune)
METHODS = {"magnitude": "adamw", "movement": "adamw", "state": "adamwprune"}


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(DIM)
        self.fc = nn.Linear(DIM, 4 * DIM)
        self.proj = nn.Linear(4 * DIM, DIM)

    def forward(self, x):
        return x + self.proj(nn.functional.gelu(self.fc(self.ln(x))))


class TinyLM(nn.Module):
    """GPT-2's shape in miniature: embedding, blocks, final LayerNorm, tied head."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.wte = nn.Embedding(VOCAB, DIM)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.ln_f = nn.LayerNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, tokens):
        x = self.wte(tokens)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def make_task():
    """Predict (token * 3 + 1) % VOCAB: learnable, fixed."""
    tokens = torch.randint(0, VOCAB, (64,), generator=torch.Generator().manual_seed(2))
    return tokens, (tokens * 3 + 1) % VOCAB


def make_optimizer(name, model, variant="fisher"):
    settings = OptimizerConfig(
        optimizer=name, learning_rate=3e-3, weight_decay=0.1, beta1=0.9, beta2=0.95
    )
    knobs = dict(sgd_momentum=0.0, spam_interval=0, spam_warmup=0, spam_theta=5000.0, adamwprune_variant=variant,
                 muon_lr=0.02, muon_momentum=0.95)
    return build_optimizer(model, settings, optimizer_config(name, knobs))


def pruning(method, **changes):
    return PruningConfig(pruning_method=method, **{**SCHEDULE, **changes})


def make_run(method, seed=0):
    model = TinyLM(seed)
    optimizer = make_optimizer(METHODS.get(method, "adamw"), model)
    return model, optimizer, build_pruner(model, optimizer, pruning(method))


def train(model, optimizer, pruner, iters, start=0):
    """The training loop's order: backward -> optimizer.step -> pruner.step -> zero_grad."""
    tokens, targets = make_task()
    history = []
    for it in range(start, start + iters):
        loss = nn.functional.cross_entropy(model(tokens), targets)
        loss.backward()
        optimizer.step()
        pruner.step(it)
        optimizer.zero_grad(set_to_none=True)
        history.append(sparsity(model))
    return history


def test_prunable_weights_are_the_block_linears_only():
    names = list(prunable_weights(TinyLM()))
    assert names == [f"blocks.{i}.{layer}.weight" for i in (0, 1) for layer in ("fc", "proj")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch's own imports
def test_prunable_weights_see_through_torch_compile():
    model = TinyLM()
    assert list(prunable_weights(torch.compile(model))) == list(prunable_weights(model))


def test_sparsity_is_read_from_the_weights():
    model = TinyLM()
    assert sparsity(model) == 0.0
    with torch.no_grad():
        model.blocks[0].fc.weight[:8] = 0.0  # 8 rows of 16 = 128 of 4 * 1024
        model.wte.weight.zero_()  # not prunable: does not count
    assert sparsity(model) == 128 / 4096


def test_schedule_ramps_cubically_and_ends_exactly_on_target():
    schedule = pruning("magnitude").schedule()
    assert [schedule.target(i) for i in range(5)] == [0.0] * 5
    assert schedule.target(15) == pytest.approx(0.7 * (1 - 0.5**3))
    targets = [schedule.target(i) for i in range(5, END + 1)]
    assert targets == sorted(targets) and targets[-1] == 0.7
    assert schedule.target(END + 100) == 0.7
    updates = [i for i in range(END + 1) if schedule.is_update(i)]
    assert updates == [5, 8, 11, 14, 17, 20, 23, 25]  # every 3 from warmup, and at the end


@pytest.mark.parametrize(
    "bad, flag",
    [
        (dict(target_sparsity=1.0), "--target-sparsity"),
        (dict(target_sparsity=-0.1), "--target-sparsity"),
        (dict(pruning_interval=0), "--pruning-interval"),
        (dict(pruning_warmup=-1), "--pruning-warmup"),
        (dict(pruning_ramp_iters=-1), "--pruning-ramp-iters"),
    ],
)
def test_config_rejects_bad_values_in_one_line_naming_the_flag(bad, flag):
    with pytest.raises(ValueError, match=rf"^{flag} must be [^\n]+$"):
        pruning("magnitude", **bad)


def test_keep_mask_prunes_the_lowest_scores_and_never_regrows():
    scores = torch.tensor([[5.0, 1.0], [3.0, 4.0]])
    assert keep_mask(scores, 0.5).tolist() == [[True, False], [False, True]]
    previous = torch.tensor([[False, True], [True, True]])  # 5.0 was pruned before
    assert keep_mask(scores, 0.5, previous).tolist() == [[False, False], [True, True]]


@pytest.mark.parametrize("method", list(METHODS))
def test_method_reaches_target_and_keeps_pruned_weights_at_zero(method):
    model, optimizer, pruner = make_run(method)
    embedding_before = model.wte.weight.detach().clone()
    history = train(model, optimizer, pruner, END + 1)

    assert history[:5] == [0.0] * 5  # nothing before warmup
    assert history == sorted(history)  # the ramp only goes up
    assert abs(sparsity(model) - 0.7) < 1e-3
    assert pruner.current_target(END) == 0.7

    zero_at_end = {name: w == 0 for name, w in prunable_weights(model).items()}
    train(model, optimizer, pruner, 10, start=END + 1)
    for name, weight in prunable_weights(model).items():
        assert torch.equal(weight == 0, zero_at_end[name]), f"{name}: pruned set changed"
    assert abs(sparsity(model) - 0.7) < 1e-3

    # Embedding (and the lm_head tied to it) trained, never pruned.
    assert model.lm_head.weight is model.wte.weight
    assert torch.count_nonzero(model.wte.weight) == model.wte.weight.numel()
    assert not torch.equal(model.wte.weight, embedding_before)


def test_magnitude_prunes_the_smallest_weights():
    model, optimizer, pruner = make_run("magnitude")
    train(model, optimizer, pruner, 5)  # up to the warmup, nothing pruned yet
    fc = model.blocks[0].fc.weight
    magnitudes = fc.detach().abs().clone()
    train(model, optimizer, pruner, 4, start=5)  # update at 8 prunes round(0.7 * ...) entries
    pruned = fc.detach() == 0
    # Pruning at 8 used the magnitudes after 3 more steps: the pruned entries were
    # almost all among the smallest ones at iteration 5.
    smallest = magnitudes.flatten().argsort()[: int(pruned.sum())]
    overlap = pruned.flatten()[smallest].float().mean()
    assert pruned.any() and overlap > 0.9


def test_movement_keeps_weights_moving_away_from_zero():
    layer = nn.Linear(2, 2, bias=False)
    model = nn.Sequential(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
    config = pruning(
        "movement", target_sparsity=0.5, pruning_warmup=0, pruning_ramp_iters=0, pruning_interval=1
    )
    pruner = build_pruner(model, None, config)
    # Gradient descent moves w by -grad: entries (0,0) and (1,1) head to zero.
    layer.weight.grad = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    pruner.step(0)
    assert layer.weight.detach().tolist() == [[0.0, 1.0], [-1.0, 0.0]]


@pytest.mark.parametrize("method", ["none", *METHODS])
def test_checkpoint_round_trip_continues_identically(method):
    n, m = 13, 17  # the save falls mid-ramp, the continuation crosses its end

    model, optimizer, pruner = make_run(method)
    train(model, optimizer, pruner, n + m)

    first, first_optimizer, first_pruner = make_run(method)
    train(first, first_optimizer, first_pruner, n)
    buffer = io.BytesIO()
    torch.save(
        {
            "model": first.state_dict(),
            "optimizer": first_optimizer.state_dict(),
            "pruner": first_pruner.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed, resumed_optimizer, resumed_pruner = make_run(method, seed=99)
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_pruner.load_state_dict(checkpoint["pruner"])
    train(resumed, resumed_optimizer, resumed_pruner, m, start=n)

    for (key, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{method}: {key} differs after resume"
    if method != "none":
        assert abs(sparsity(resumed) - 0.7) < 1e-3


def test_adamwprune_keeps_its_masks_by_itself_and_through_a_checkpoint():
    """Without the pruner's help: masked weights stay zero across optimizer steps,
    and the masks come back as bool masks of the same parameters."""
    model = TinyLM()
    optimizer = make_optimizer("adamwprune", model)
    fc = model.blocks[0].fc.weight
    keep = torch.rand(fc.shape, generator=torch.Generator().manual_seed(3)) > 0.5
    optimizer.set_prune_mask(fc, keep)
    train(model, optimizer, build_pruner(model, optimizer, pruning("none")), 5)
    assert torch.equal(fc != 0, keep)

    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    restored = make_optimizer("adamwprune", model)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert list(restored.prune_masks) == [fc]
    assert restored.prune_masks[fc].dtype == torch.bool
    assert torch.equal(restored.prune_masks[fc], keep)


def test_state_pruning_needs_adamwprune():
    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(
        ValueError, match=r"^[^\n]*--pruning-method state[^\n]*--optimizer adamwprune[^\n]*$"
    ):
        build_pruner(model, optimizer, pruning("state"))


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(ValueError) as error:
        pruning("prune-all")
    message = str(error.value)
    assert "--pruning-method 'prune-all'" in message and "\n" not in message
    for name in ("none", "magnitude", "movement", "state"):
        assert name in message
    with pytest.raises(ValueError, match="'prune-all'"):
        pruner_class("prune-all")


# --- registry, PruningConfig and the Kconfig tree -------------------------


@pytest.fixture(scope="module")
def tree():
    kconf = load_tree()
    return kconf, {option.dest: option for option in options(kconf)}


def test_every_kconfig_method_has_a_module_and_every_module_an_entry(tree):
    _, by_dest = tree
    assert by_dest["pruning_method"].name == "PRUNING_METHOD"
    assert sorted(by_dest["pruning_method"].values) == sorted(pruning_methods())


def test_every_method_module_exposes_a_pruner():
    for name in pruning_methods():
        cls = pruner_class(name)
        for method in ("step", "current_target", "state_dict", "load_state_dict"):
            assert callable(getattr(cls, method, None)), f"{name}: PRUNER has no {method}()"


def test_every_config_field_is_a_flag_and_every_pruning_option_a_field(tree):
    _, by_dest = tree
    assert PruningConfig.__dataclass_params__.frozen
    fields = {field.name for field in dataclasses.fields(PruningConfig)}
    for field in dataclasses.fields(PruningConfig):
        assert field.name in by_dest and by_dest[field.name].train_flag, f"{field.name}: no flag"
        assert field.default is dataclasses.MISSING, f"{field.name}: defaults live in Kconfig"
    in_menu = {dest for dest, option in by_dest.items() if option.group == "Pruning"}
    assert in_menu, "no Pruning menu in the Kconfig tree"
    assert in_menu <= fields, f"options no pruner reads: {sorted(in_menu - fields)}"


@pytest.mark.parametrize("method", pruning_methods())
def test_the_kconfig_defaults_make_a_valid_pruner(tree, method):
    """`train.py --pruning-method METHOD` (with its optimizer) alone works."""
    kconf, by_dest = tree
    flags = {dest: option.default(kconf) for dest, option in by_dest.items()}
    flags["pruning_method"] = method
    model = TinyLM()
    optimizer = make_optimizer(METHODS.get(method, "adamw"), model)
    pruner = build_pruner(model, optimizer, PruningConfig.from_flags(flags))
    pruner.step(0)
    assert pruner.current_target(10**9) == (0.0 if method == "none" else flags["target_sparsity"])


# --- AdamWPrune's variants: each score against a hand computation ----------------

# A 3x3 weight with AdamW state.  v's entries are powers of 16, so fourth roots
# are exact, and every value is exact in float16 (bitter8/9 compute in it).
W = [[0.5, -2.0, 0.25], [-1.0, 4.0, -0.5], [2.0, -0.25, 1.0]]
M = [[0.25, 0.5, -1.0], [-0.5, 1.0, 0.25], [-2.0, -0.5, 0.5]]
V = [[1.0, 16.0, 0.0625], [256.0, 1.0, 16.0], [0.0625, 1.0, 256.0]]
EPS = 1e-8


def sign(x):
    return (x > 0) - (x < 0)


HAND = {  # entry (w, m, v) -> score, written from each docstring's formula
    "fisher": lambda w, m, v: w * w * v,
    "bitter0": lambda w, m, v: abs(w * m) * abs(w) / (math.sqrt(v) + EPS),
    "bitter1": lambda w, m, v: abs(w),
    "bitter2": lambda w, m, v: abs(w),
    "bitter3": lambda w, m, v: abs(w) * math.sqrt(abs(m) + EPS),
    "bitter4": lambda w, m, v: abs(w) * math.sqrt(abs(m) + EPS),
    "bitter5": lambda w, m, v: sign(w) * m / (math.sqrt(v) + EPS) + 0.1 * abs(w),
    "bitter6": lambda w, m, v: abs(w) * math.sqrt(abs(m) + EPS) * math.sqrt(m * m / (v + EPS)),
    "bitter7": lambda w, m, v: abs(w) * (abs(v) + EPS) ** 0.25,
    "bitter8": lambda w, m, v: abs(w) * abs(v) ** 0.25,  # float16: 1e-5 is below v's rounding
    "bitter9": lambda w, m, v: abs(w) * abs(v) ** 0.25,
}


def test_every_variant_has_a_hand_computation():
    assert sorted(HAND) == sorted(SCORES)


@pytest.mark.parametrize("variant", sorted(SCORES))
def test_variant_score_matches_its_formula_on_a_3x3_example(variant):
    w, m, v = torch.tensor(W), torch.tensor(M), torch.tensor(V)
    expected = [HAND[variant](W[i][j], M[i][j], V[i][j]) for i in range(3) for j in range(3)]
    got = SCORES[variant](w, m, v)
    assert got.dtype == torch.float32 and got.shape == (3, 3)
    tolerance = 2e-3 if variant in ("bitter8", "bitter9") else 1e-6  # float16's 11-bit mantissa
    assert got.flatten().tolist() == pytest.approx(expected, rel=tolerance)


def test_bitter5_keeps_the_weight_adam_pushes_to_zero_as_the_source_code_does():
    # w = 1, m = 1: Adam's update -lr * m / sqrt(v) moves w towards zero.  The
    # source's docs would prune it first; its code (followed) keeps it.
    w, v = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    score = SCORES["bitter5"](w, torch.tensor([[1.0, -1.0]]), v)
    assert score[0, 0] > score[0, 1]


@pytest.mark.parametrize("variant", sorted(SCORES))
def test_variant_falls_back_to_magnitude_before_the_first_step(variant):
    w = torch.tensor(W)
    assert torch.equal(SCORES[variant](w, None, None), w.square() if variant == "fisher" else w.abs())


def test_state_pruning_with_bitter1_prunes_as_magnitude_does():
    """bitter1 is |w|: through the state method it picks magnitude's masks."""
    runs = {}
    for method, optimizer, variant in (("magnitude", "adamwprune", "fisher"), ("state", "adamwprune", "bitter1")):
        model = TinyLM()
        opt = make_optimizer(optimizer, model, variant=variant)
        train(model, opt, build_pruner(model, opt, pruning(method)), END + 1)
        runs[method] = model
    for name, weight in prunable_weights(runs["state"]).items():
        assert torch.equal(weight == 0, prunable_weights(runs["magnitude"])[name] == 0), name


def test_bitter4_without_layer_adaptive_targets_is_refused_in_one_line():
    model = TinyLM()
    with pytest.raises(ValueError, match=r"^--adamwprune-variant bitter4 .* add --pruning-layer-adaptive [^\n]+$"):
        build_pruner(model, make_optimizer("adamwprune", model, variant="bitter4"), pruning("state"))


# --- schedules: linear, AdamWPrune's cubic, layer-adaptive targets ------------------


def test_ramps_follow_their_formulas_and_end_on_target():
    for shape, halfway in (("zhu-gupta", 1 - 0.5**3), ("linear", 0.5), ("cubic", 0.5**3)):
        schedule = pruning("magnitude", pruning_schedule=shape).schedule()
        assert schedule.target(4) == 0.0
        assert schedule.target(15) == pytest.approx(0.7 * halfway), shape
        assert schedule.target(END) == 0.7 and schedule.target(END + 50) == 0.7


@pytest.mark.parametrize("method", list(METHODS))
def test_cubic_schedule_hits_the_target_at_the_end_of_the_ramp(method):
    model = TinyLM()
    optimizer = make_optimizer(METHODS[method], model)
    pruner = build_pruner(model, optimizer, pruning(method, pruning_schedule="cubic"))
    history = train(model, optimizer, pruner, END + 1)
    assert history[:5] == [0.0] * 5
    # progress^3: at the update at 14 (progress 9/20), 0.7 * 0.45^3 = 6.4% of the weights.
    assert history[14] == pytest.approx(0.7 * (9 / 20) ** 3, abs=1e-3)
    assert history[END - 1] < 0.7 * (19 / 20) ** 3 + 1e-3  # not there yet before the end...
    assert abs(history[END] - 0.7) < 1e-3  # ...and within 0.1% of the target at it


def test_layer_adaptive_targets_rise_from_0_7x_to_1_3x_and_average_the_target():
    model = TinyLM()
    optimizer = make_optimizer("adamwprune", model, variant="bitter4")
    config = pruning("state", target_sparsity=0.5, pruning_schedule="cubic", pruning_layer_adaptive=True)
    pruner = build_pruner(model, optimizer, config)
    train(model, optimizer, pruner, END + 1)
    # 4 prunable layers: 0.5 * (0.7, 0.9, 1.1, 1.3)
    expected = [0.35, 0.45, 0.55, 0.65]
    per_layer = layer_sparsity(pruner)
    assert list(per_layer) == [f"sparsity/blocks.{i}.{layer}" for i in (0, 1) for layer in ("fc", "proj")]
    assert list(per_layer.values()) == pytest.approx(expected, abs=1 / 1024)  # one entry of 1024
    assert sum(per_layer.values()) / 4 == pytest.approx(0.5, abs=1 / 1024)


def test_layer_adaptive_caps_a_layer_at_95_percent():
    schedule = pruning("magnitude", target_sparsity=0.9, pruning_layer_adaptive=True).schedule()
    assert [schedule.layer_target(0.9, i, 3) for i in range(3)] == pytest.approx([0.63, 0.9, 0.95])


# --- what a researcher inspects: per-layer sparsity, masks.pt ---------------------


def test_masks_file_holds_one_bit_per_weight_and_reads_back(tmp_path):
    model, optimizer, pruner = make_run("magnitude")
    train(model, optimizer, pruner, END + 1)
    path = save_masks(tmp_path, pruner, END)
    assert path == tmp_path / MASKS_FILE and sorted(p.name for p in tmp_path.iterdir()) == [MASKS_FILE]
    masks = load_masks(path)
    assert list(masks) == ["blocks.0.fc", "blocks.0.proj", "blocks.1.fc", "blocks.1.proj"]
    for name, weight in prunable_weights(model).items():
        assert torch.equal(masks[name.removesuffix(".weight")], weight != 0)
    saved = torch.load(path, weights_only=True)
    assert saved["iter_num"] == END
    assert sum(entry["bits"].numel() for entry in saved["masks"].values()) == 4 * 1024 // 8


def test_dense_training_logs_no_layer_sparsity_and_writes_no_masks(tmp_path):
    model, optimizer, pruner = make_run("none")
    assert layer_sparsity(pruner) == {} and save_masks(tmp_path, pruner, 1) is None
    assert list(tmp_path.iterdir()) == []
