"""The PNG plots of scripts/experiments/report.py: one line per point (the mean over its
seeds at each x), the seeds' min..max shaded, from the runs' journals;
val_loss_delta_vs_iter.png: each point's val loss minus the baseline's at
the same seed and iteration (paired: the seeds' shared luck cancels, so a
difference smaller than the spread between seeds shows); and, when runs
logged sparsity/<layer>, layer_sparsity.png: each layer's final sparsity, a
bar per point.

Each plot is written atomically (savefig into lib.atomic's temporary path),
drawn with matplotlib's Agg backend on a Figure of its own (no pyplot state).
"""

import statistics

from lib.atomic import replaced_atomically

LOSS = "cross-entropy, nats/token"
# (file stem, journal metric, x axis, y label, title)
PLOTS = (
    ("val_loss_vs_iter", "val/loss", "iter", f"validation loss ({LOSS})", "Validation loss vs iteration"),
    ("val_loss_vs_tokens", "val/loss", "tokens", f"validation loss ({LOSS})", "Validation loss vs tokens seen"),
    ("train_loss_vs_iter", "train/loss", "iter", f"training loss ({LOSS})", "Training loss vs iteration"),
    ("lr_vs_iter", "train/lr", "iter", "learning rate", "Learning rate vs iteration"),
    ("sparsity_vs_iter", "train/sparsity", "iter", "sparsity (fraction of zero weights)", "Sparsity vs iteration"),
)
X_LABELS = {
    "iter": "iteration (optimizer steps)",
    "tokens": "tokens seen (iteration × batch size × block size × accumulation steps)",
}


def prunes(groups):
    """Whether some run prunes (a sparsity plot is worth drawing)."""
    return any(r.config.get("pruning_method", "none") not in (None, "none") for rs in groups.values() for r in rs)


def series(run, metric, x_axis):
    """{x: value} of one run's journaled metric."""
    scale = run.tokens_per_iter if x_axis == "tokens" else 1
    if scale is None:
        return {}
    return {step * scale: m[metric] for step, m in run.points.items() if m.get(metric) is not None}


def colour(groups, point):
    """The point's colour in every plot: its place among the points (the
    same whichever points have data for a plot)."""
    return f"C{list(groups).index(point) % 10}"


def _columns(per_run):
    """(xs, means, mins, maxs) of {x: value} series, over those holding each x."""
    xs = sorted({x for s in per_run for x in s})
    columns = [[s[x] for s in per_run if x in s] for x in xs]
    return xs, [statistics.fmean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def aggregate(runs, metric, x_axis):
    """(xs, means, mins, maxs) over the runs holding a value at each x."""
    return _columns([series(r, metric, x_axis) for r in runs])


def draw(groups, metric, x_axis, y_label, title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for point, runs in groups.items():
        xs, means, lows, highs = aggregate(runs, metric, x_axis)
        if not xs:
            continue
        marker = "o" if len(xs) <= 40 else None
        (line,) = ax.plot(xs, means, marker=marker, markersize=3, color=colour(groups, point),
                          label=f"{point} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(X_LABELS[x_axis])
    ax.set_ylabel(y_label)
    ax.set_title(f"{title} (mean over seeds; shaded: min..max)")
    ax.grid(True, alpha=0.3)
    if ax.get_lines():
        ax.legend(title="point", fontsize="small")
    return fig


def paired_delta(runs, baseline_runs, metric):
    """(xs, means, mins, maxs) over the seeds of run - baseline run of the
    same seed, at each x both logged `metric`."""
    base = {r.seed: series(r, metric, "iter") for r in baseline_runs}
    per_seed = []
    for run in runs:
        if run.seed in base:
            values = series(run, metric, "iter")
            per_seed.append({x: v - base[run.seed][x] for x, v in values.items() if x in base[run.seed]})
    return _columns(per_seed)


def draw_delta(groups, baseline):
    """Val loss minus the baseline's, paired by seed; None with one point."""
    from matplotlib.figure import Figure

    if len(groups) < 2:
        return None
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0.0, color="black", linewidth=1, linestyle="--", label=f"{baseline} (baseline)")
    for point, runs in groups.items():
        if point == baseline:
            continue
        xs, means, lows, highs = paired_delta(runs, groups[baseline], "val/loss")
        pairs = len({r.seed for r in runs} & {r.seed for r in groups[baseline]})
        if not xs:
            continue
        (line,) = ax.plot(xs, means, marker="o" if len(xs) <= 40 else None, markersize=3, color=colour(groups, point),
                          label=f"{point} (n={pairs} seeds)")  # fmt: skip
        if pairs > 1:
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(X_LABELS["iter"])
    ax.set_ylabel("val loss minus the baseline's, same seed (nats/token)")
    ax.set_title("Validation loss against the baseline (paired by seed: mean; shaded: min..max)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


LAYER_PREFIX = "sparsity/"  # gpt2/train.py's evaluate() logs sparsity/<layer> of a pruning run


def final_layer_sparsity(run):
    """{layer: sparsity} at the run's last journaled step that has them ({} if none)."""
    for step in sorted(run.points, reverse=True):
        layers = {k[len(LAYER_PREFIX):]: v for k, v in run.points[step].items() if k.startswith(LAYER_PREFIX)}
        if layers:
            return layers
    return {}


def draw_layer_sparsity(groups):
    """One figure: a bar per (layer, point), the mean over the point's seeds
    of the final sparsity of that layer, layers in the model's order; None
    when no run logged per-layer sparsity."""
    from matplotlib.figure import Figure

    per_point = {}
    for point, runs in groups.items():
        finals = [f for f in (final_layer_sparsity(r) for r in runs) if f]
        if finals:
            per_point[point] = {layer: statistics.fmean(f[layer] for f in finals if layer in f) for layer in finals[0]}
    if not per_point:
        return None
    layers = list(next(iter(per_point.values())))
    fig = Figure(figsize=(max(8, 0.5 * len(layers) * len(per_point) ** 0.5), 5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(per_point)
    for i, (point, values) in enumerate(per_point.items()):
        xs = [j + (i - (len(per_point) - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, [values.get(layer, 0.0) for layer in layers], width=width, label=point, color=colour(groups, point))
    ax.set_xticks(range(len(layers)), [layer.removeprefix("transformer.") for layer in layers],
                  rotation=60, ha="right", fontsize="small")  # fmt: skip
    ax.set_ylabel("sparsity (fraction of zero weights)")
    ax.set_title("Final sparsity per layer (mean over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="point", fontsize="small")
    return fig


def write_plots(groups, out_dir, baseline):
    """Write the plots into `out_dir` (`baseline`: the point the others are
    compared with); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    for stem, metric, x_axis, y_label, title in PLOTS:
        if metric == "train/sparsity" and not prunes(groups):
            continue
        written.append(_save(draw(groups, metric, x_axis, y_label, title), out_dir / f"{stem}.png"))
    delta = draw_delta(groups, baseline)
    if delta is not None:
        written.append(_save(delta, out_dir / "val_loss_delta_vs_iter.png"))
    layers = draw_layer_sparsity(groups)
    if layers is not None:
        written.append(_save(layers, out_dir / "layer_sparsity.png"))
    return written


def _save(fig, path):
    with replaced_atomically(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
