"""lib/optim: every optimizer trains, resumes exactly, and SPAM / AdamWAdv do
what their docstrings say, checked against hand-computed values; the
registry, the configs and the Kconfig tree agree."""

import dataclasses
import io
import math

import pytest
import torch
from torch import nn

from lib.kconfig import load_tree
from lib.optim import (
    AdamWAdv,
    AdamWSpam,
    OptimizerConfig,
    build_optimizer,
    optimizer_config,
    optimizer_config_class,
    optimizer_names,
)
from lib.optim._groups import param_groups
from lib.optim.adamwspam import spam_lr_scale
from lib.options import options

# Each optimizer's own knobs, by flag dest: Kconfig's defaults (so a new
# optimizer's knobs are here without editing this file), with SPAM's reset
# small enough (every 8 steps) to happen inside every test run.
KNOBS = {**{option.dest: option.default(load_tree()) for option in options(load_tree())
            if option.group == "Optimizer" and option.dest != "optimizer"},
         "spam_interval": 8, "spam_warmup": 3}
LR = {"sgd": 0.05}  # the Adam family uses DEFAULT_LR
DEFAULT_LR = 0.01


def settings(name, **changes):
    values = dict(optimizer=name, learning_rate=LR.get(name, DEFAULT_LR), weight_decay=0.01,
                  beta1=0.9, beta2=0.95)
    return OptimizerConfig(**{**values, **changes})


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 1))


def make_task():
    """A fixed smooth regression problem: y = sin(x @ w)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 8, generator=gen)
    y = torch.sin(x @ torch.randn(8, 1, generator=gen))
    return x, y


def make_optimizer(name, model):
    return build_optimizer(model, settings(name), optimizer_config(name, KNOBS))


def train(model, optimizer, task, iters, start=0):
    """`iters` full-batch steps; lr set each iteration as the training loop does."""
    x, y = task
    losses = []
    for it in range(start, start + iters):
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * (1.0 - it / 200)  # a decaying schedule
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def with_initial_lr(optimizer):
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return optimizer


@pytest.mark.parametrize("name", optimizer_names())
def test_each_optimizer_lowers_the_loss(name):
    model = make_model()
    losses = train(model, with_initial_lr(make_optimizer(name, model)), make_task(), 50)
    assert losses[-1] < 0.5 * losses[0], f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.parametrize("name", optimizer_names())
def test_state_dict_round_trip_continues_identically(name):
    """N steps, save, load into a fresh model + optimizer, M steps == N + M straight."""
    task, n, m = make_task(), 11, 9  # the SPAM resets at 8 and 16 fall on both sides

    model = make_model()
    optimizer = with_initial_lr(make_optimizer(name, model))
    train(model, optimizer, task, n + m)

    first = make_model()
    first_optimizer = with_initial_lr(make_optimizer(name, first))
    train(first, first_optimizer, task, n)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = make_model(seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = make_optimizer(name, resumed)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    train(resumed, resumed_optimizer, task, m, start=n)

    for (key, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {key} differs after resume"


def test_weight_decay_only_on_matrices_and_tied_weights_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 10))
    model[2].weight = model[0].weight  # tied, as GPT-2's lm_head and wte
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [(10, 4)]  # the shared weight, once
    assert sorted(p.dim() for p in no_decay["params"]) == [1, 1, 1]  # LN gain, LN bias, bias


def test_unknown_optimizer_names_the_valid_ones():
    for make in (lambda: settings("adamx"), lambda: optimizer_config("adamx", KNOBS)):
        with pytest.raises(ValueError) as error:
            make()
        message = str(error.value)
        assert "--optimizer 'adamx'" in message and "\n" not in message
        for name in ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune"):
            assert name in message


def test_build_optimizer_refuses_another_optimizers_config():
    with pytest.raises(ValueError, match=r"^--optimizer adamwspam takes [^\n]*sgd[^\n]*$"):
        build_optimizer(make_model(), settings("adamwspam"), optimizer_config("sgd", KNOBS))


def test_adamw_uses_the_fused_kernel_on_cpu():
    optimizer = make_optimizer("adamw", make_model())
    assert optimizer.defaults["fused"] and not optimizer.defaults["foreach"]


def test_adamwprune_without_masks_is_adamw_bitwise():
    task = make_task()
    results = []
    for name in ("adamw", "adamwprune"):
        model = make_model()
        train(model, with_initial_lr(make_optimizer(name, model)), task, 20)
        results.append(list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(*results))


# --- SPAM -----------------------------------------------------------------


def test_spam_lr_scale_is_one_until_the_first_reset_then_warms_up():
    interval, warmup = 10, 4
    assert [spam_lr_scale(done, interval, warmup) for done in range(10)] == [1.0] * 10
    after_reset = [spam_lr_scale(done, interval, warmup) for done in range(10, 15)]
    assert after_reset[0] == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    assert 0 < after_reset[0] < after_reset[1] < after_reset[2] < 1.0
    assert after_reset[3:] == [1.0, 1.0]
    assert spam_lr_scale(20, interval, warmup) == after_reset[0]  # every reset
    assert spam_lr_scale(25, 0, warmup) == 1.0  # interval 0: never reset


def spam_on_one_tensor(interval=3, warmup=2, theta=5000.0, lr=0.1):
    weight = nn.Parameter(torch.ones(4))
    optimizer = AdamWSpam(
        [weight], lr=lr, betas=(0.9, 0.99), reset_interval=interval, warmup=warmup, theta=theta
    )
    return weight, optimizer


def step_with_grad(weight, optimizer, grad):
    weight.grad = grad.clone()
    optimizer.step()


def test_spam_reset_restarts_moments_and_bias_correction():
    weight, optimizer = spam_on_one_tensor(interval=3, warmup=2)
    for g in ([1.0, -2.0, 3.0, 0.5], [2.0, 1.0, -1.0, 0.5], [0.5, 0.5, 0.5, 0.5]):
        step_with_grad(weight, optimizer, torch.tensor(g))
    state = optimizer.state[weight]
    assert state["step"] == 3 and state["exp_avg"].abs().sum() > 0

    grad = torch.tensor([0.4, -0.8, 1.2, -0.2])
    before = weight.detach().clone()
    step_with_grad(weight, optimizer, grad)  # 4th step: the reset step

    # Nothing of the first three gradients is left: the moments start from zero.
    assert state["step"] == 1
    assert torch.equal(state["exp_avg"], (1 - 0.9) * grad)
    assert torch.allclose(state["exp_avg_sq"], (1 - 0.99) * grad * grad, rtol=1e-6, atol=0)
    # Bias-corrected m / sqrt(v) is sign(g); the step is scaled by the warmup.
    scale = spam_lr_scale(3, 3, 2)
    assert scale < 1.0
    expected = before - 0.1 * scale * grad / (grad.abs() + 1e-8)
    assert torch.allclose(weight.detach(), expected, rtol=1e-6, atol=1e-7)
    assert optimizer.param_groups[0]["spam_step"] == 4


def test_spam_clips_a_spike_to_sqrt_theta_v_and_leaves_the_rest():
    theta = 100.0
    weight, optimizer = spam_on_one_tensor(interval=0, theta=theta)
    for _ in range(3):
        step_with_grad(weight, optimizer, torch.tensor([1.0, 1.0, -1.0, 0.0]))
    state = optimizer.state[weight]
    m, v = state["exp_avg"].clone(), state["exp_avg_sq"].clone()
    v_hat = v / (1 - 0.99**3)

    spike = torch.tensor([1000.0, 2.0, -1000.0, 5.0])
    weight.grad = spike.clone()
    optimizer.step()

    limit = torch.sqrt(theta * v_hat)  # 10 for the first three entries
    clipped = torch.tensor([limit[0].item(), 2.0, -limit[2].item(), 5.0])
    # Entry 3 never had a gradient (v == 0): no scale to call it a spike, not clipped.
    assert torch.allclose(state["exp_avg"], 0.9 * m + 0.1 * clipped, rtol=1e-6, atol=0)
    assert torch.allclose(state["exp_avg_sq"], 0.99 * v + 0.01 * clipped**2, rtol=1e-6, atol=0)
    assert torch.equal(weight.grad, spike)  # p.grad itself is left for movement pruning


# --- AdamWAdv -------------------------------------------------------------


def test_adamwadv_without_update_clipping_is_amsgrad_adamw():
    task = make_task()
    ours, theirs = make_model(), make_model()
    groups = dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    unclipped = AdamWAdv(ours.parameters(), max_update_rms=math.inf, **groups)
    train(ours, with_initial_lr(unclipped), task, 30)
    reference = torch.optim.AdamW(theirs.parameters(), amsgrad=True, **groups)
    train(theirs, with_initial_lr(reference), task, 30)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adamwadv_caps_the_update_rms_after_quiet_gradients():
    """Tiny gradients then a big one: Adam's update RMS jumps past 1, ours stays at 1.

    Once bias correction has faded, the jump is about (1 - beta1) / sqrt(1 - beta2) = 5.
    """
    updates = {}
    for max_rms in (1.0, math.inf):
        weight = nn.Parameter(torch.zeros(100))
        optimizer = AdamWAdv([weight], lr=0.1, betas=(0.5, 0.99), max_update_rms=max_rms)
        for _ in range(500):
            step_with_grad(weight, optimizer, torch.full((100,), 1e-3))
        before = weight.detach().clone()
        step_with_grad(weight, optimizer, torch.ones(100))
        updates[max_rms] = (weight.detach() - before).norm().item() / 10 / 0.1  # RMS / lr
    assert updates[math.inf] > 4.0
    assert updates[1.0] == pytest.approx(1.0, rel=1e-4)  # float32 weights near 50


# --- registry, configs and the Kconfig tree -------------------------------


@pytest.fixture(scope="module")
def tree():
    kconf = load_tree()
    return kconf, {option.dest: option for option in options(kconf)}


def optimizer_configs():
    return [OptimizerConfig] + [optimizer_config_class(name) for name in optimizer_names()]


def test_every_kconfig_optimizer_has_a_module_and_every_module_an_entry(tree):
    _, by_dest = tree
    assert by_dest["optimizer"].name == "OPTIMIZER"
    assert sorted(by_dest["optimizer"].values) == sorted(optimizer_names())


def test_every_config_field_is_a_flag_without_a_default_of_its_own(tree):
    _, by_dest = tree
    for cls in optimizer_configs():
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
        for field in dataclasses.fields(cls):
            where = f"{cls.__module__}.{cls.__qualname__}.{field.name}"
            assert field.name in by_dest, f"{where} is no train.py flag"
            assert by_dest[field.name].train_flag, f"{where}: its option is not a train.py flag"
            assert field.default is dataclasses.MISSING, f"{where}: defaults live in Kconfig"
            assert field.default_factory is dataclasses.MISSING, f"{where}: defaults live in Kconfig"


def test_every_optimizer_option_is_a_config_field(tree):
    _, by_dest = tree
    fields = {field.name for cls in optimizer_configs() for field in dataclasses.fields(cls)}
    in_menu = {dest for dest, option in by_dest.items() if option.group == "Optimizer"}
    assert in_menu, "no Optimizer menu in the Kconfig tree"
    assert in_menu <= fields, f"options no optimizer reads: {sorted(in_menu - fields)}"


def test_an_optimizers_knobs_show_in_menuconfig_with_it_and_only_with_it(tree):
    """SPAM_THETA is offered when adamwspam is selected, not with adamw."""
    kconf, by_dest = tree
    knobs = {name: {f.name for f in dataclasses.fields(optimizer_config_class(name))}
             for name in optimizer_names()}
    for name in optimizer_names():
        kconf.syms[f"OPTIMIZER_{name.upper()}"].set_value(2)
        try:
            for other, fields in knobs.items():
                for field in fields:
                    shown = by_dest[field].item.visibility > 0
                    assert shown == (other == name), f"--{field.replace('_', '-')} with --optimizer {name}"
        finally:
            kconf.unset_values()


@pytest.mark.parametrize("name", optimizer_names())
def test_the_kconfig_defaults_make_a_valid_optimizer(tree, name):
    """`train.py --optimizer NAME` alone: every default passes the configs."""
    kconf, by_dest = tree
    flags = {dest: option.default(kconf) for dest, option in by_dest.items()}
    flags["optimizer"] = name
    optimizer = build_optimizer(
        make_model(), OptimizerConfig.from_flags(flags), optimizer_config(name, flags)
    )
    assert isinstance(optimizer, torch.optim.Optimizer)


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda: settings("adamw", beta1=1.0), "--beta1"),
        (lambda: settings("adamw", beta2=-0.1), "--beta2"),
        (lambda: settings("adamw", learning_rate=0.0), "--learning-rate"),
        (lambda: settings("adamw", weight_decay=-1.0), "--weight-decay"),
        (lambda: optimizer_config("sgd", {**KNOBS, "sgd_momentum": 1.5}), "--sgd-momentum"),
        (lambda: optimizer_config("adamwspam", {**KNOBS, "spam_interval": -1}), "--spam-interval"),
        (lambda: optimizer_config("adamwspam", {**KNOBS, "spam_warmup": -2}), "--spam-warmup"),
        (lambda: optimizer_config("adamwspam", {**KNOBS, "spam_theta": -1}), "--spam-theta"),
    ],
)
def test_configs_reject_bad_values_naming_the_flag(make, flag):
    with pytest.raises(ValueError, match=rf"^{flag} must be [^\n]+$"):
        make()


def test_spam_theta_message():
    with pytest.raises(ValueError) as error:
        optimizer_config("adamwspam", {**KNOBS, "spam_theta": -1})
    assert str(error.value) == "--spam-theta must be > 0, not -1"


def test_spam_knobs_have_no_second_default():
    """SPAM_INTERVAL's default lives in Kconfig only (1000); the class has
    none that could disagree (it once said 500)."""
    with pytest.raises(TypeError, match="reset_interval"):
        AdamWSpam([nn.Parameter(torch.ones(2))], lr=0.1)
    from gpt2.cli import parse_args

    args = parse_args(["--optimizer", "adamwspam"])
    optimizer = build_optimizer(make_model(), OptimizerConfig.from_flags(vars(args)), optimizer_config("adamwspam", vars(args)))
    assert optimizer.defaults["reset_interval"] == args.spam_interval == 1000
