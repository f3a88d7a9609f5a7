"""The PNG plots of scripts/experiments/report.py: one line per point (the mean over its
seeds at each x), the seeds' min..max shaded, from the runs' journals.

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


def aggregate(runs, metric, x_axis):
    """(xs, means, mins, maxs) over the runs holding a value at each x."""
    per_run = [series(r, metric, x_axis) for r in runs]
    xs = sorted({x for s in per_run for x in s})
    columns = [[s[x] for s in per_run if x in s] for x in xs]
    return xs, [statistics.fmean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def draw(groups, metric, x_axis, y_label, title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for point, runs in groups.items():
        xs, means, lows, highs = aggregate(runs, metric, x_axis)
        if not xs:
            continue
        marker = "o" if len(xs) <= 40 else None
        (line,) = ax.plot(xs, means, marker=marker, markersize=3, label=f"{point} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(X_LABELS[x_axis])
    ax.set_ylabel(y_label)
    ax.set_title(f"{title} (mean over seeds; shaded: min..max)")
    ax.grid(True, alpha=0.3)
    if ax.get_lines():
        ax.legend(title="point", fontsize="small")
    return fig


def write_plots(groups, out_dir):
    """Write the plots into `out_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    for stem, metric, x_axis, y_label, title in PLOTS:
        if metric == "train/sparsity" and not prunes(groups):
            continue
        fig = draw(groups, metric, x_axis, y_label, title)
        path = out_dir / f"{stem}.png"
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        written.append(path)
    return written
