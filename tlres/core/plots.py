"""Every figure tlres draws, and the one place matplotlib is set up (the Agg backend: files, no window).

* `run_figures`: a run's accuracy.png, loss.png and confusion.png (written by the runner);
* `report_figures`: `tlres report`'s fig2_accuracy.png, fig3_loss.png, fig4_confusion.png;
* `compare_curves`: `tlres compare --plot`'s accuracy and loss curves per side;
* `parity_steps`: `tlres parity`'s per-step loss differences.

The callers decide what is drawn (groups, labels, intervals); these functions only draw it.
matplotlib is imported when a figure is drawn: it is optional for reading results and
costs half a second to import.
"""

import os

import numpy as np

from tlres.core.errors import TlresError


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(ax, cm, class_names, title):
    cm = np.asarray(cm)
    ax.imshow(cm, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(class_names) <= 20:
        thresh = cm.max() / 2 if cm.size else 0
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > thresh else "black")


def epoch_axis(ax, epochs):
    """Integer epoch ticks, and half an epoch of room either side of a short run's points
    (matplotlib would draw one epoch's point on an axis from 0.96 to 1.04)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs and max(epochs) - min(epochs) < 4:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)


def _marker(epochs):
    """A visible point on every epoch (a one-epoch run is one point), smaller on long runs."""
    return {"marker": "o", "markersize": 4 if len(epochs) <= 20 else 2.5}


# ---------------------------------------------------------------- one run

def _curves(plt, path, epochs, history, series, ylabel, title, dpi=120):
    """One PNG of per-epoch curves; returns what it drew: per series its colour and each
    point's (column, row) pixel in the PNG, and the x ticks in view."""
    from matplotlib.colors import to_rgb

    fig, ax = plt.subplots(figsize=(6, 4))
    lines = [ax.plot(epochs, [r[key] for r in history], style, label=label, **_marker(epochs))[0]
             for key, style, label in series]
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    epoch_axis(ax, epochs)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    scale, height = dpi / fig.dpi, fig.get_figheight() * dpi
    drawn = {"series": {}, "xticks": [float(t) for t in ax.get_xticks()
                                      if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]}
    for line in lines:
        xy = ax.transData.transform(line.get_xydata())
        drawn["series"][line.get_label()] = {
            "color": to_rgb(line.get_color()),
            "pixels": [(float(x * scale), float(height - y * scale)) for x, y in xy]}
    plt.close(fig)
    return drawn


RUN_FIGURES = ("accuracy.png", "loss.png", "confusion.png")  # what run_figures writes
REPORT_FIGURES = ("fig2_accuracy.png", "fig3_loss.png", "fig4_confusion.png")  # report_figures


def run_figures(out, history, metrics, class_names, title=""):
    """accuracy.png, loss.png and confusion.png in `out`; returns {file: what `_curves` drew}."""
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    drawn = {}
    drawn["accuracy.png"] = _curves(
        plt, os.path.join(out, "accuracy.png"), epochs, history,
        [("accuracy", "-", "train accuracy"), ("val_accuracy", "-", "validation accuracy"),
         ("val_mean_class_accuracy", "--", "validation mean per-class")],
        "accuracy", f"Accuracy per epoch: {title}")
    drawn["loss.png"] = _curves(
        plt, os.path.join(out, "loss.png"), epochs, history,
        [("loss", "-", "train loss"), ("val_loss", "-", "validation loss")],
        "loss (training criterion)", f"Loss per epoch: {title}")

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    plot_confusion(ax, metrics["confusion_matrix"], class_names,
                   f"{title}: accuracy {metrics['accuracy']:.4f} (n={metrics['num_test']})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "confusion.png"), dpi=120)
    plt.close(fig)
    return drawn


# ---------------------------------------------------------------- the report's figures

def _band(ax, runs, key, label, style="-", color=None):
    rows = [r["history"] for r in runs if r["history"] and all(h.get(key) is not None for h in r["history"])]
    if not rows:
        return None
    n = min(len(h) for h in rows)
    ep = [h["epoch"] for h in rows[0][:n]]
    v = np.array([[h[key] for h in hist[:n]] for hist in rows], np.float64)
    (line,) = ax.plot(ep, v.mean(0), style, color=color, label=f"{label} (n={len(rows)})",
                      **_marker(ep))
    if len(rows) > 1:
        ax.fill_between(ep, v.min(0), v.max(0), color=line.get_color(), alpha=0.2)
    return line.get_color()


def _epochs(groups):
    return sorted({h["epoch"] for runs in groups.values() for r in runs for h in r["history"] or []
                   if h.get("epoch") is not None})


def report_figures(out, plotted, points, labels, data_label, mixed):
    """fig2/3/4 PNGs in `out`; returns {file: [panel titles]}.

    `plotted`: {group: runs} whose curves and confusion matrices are drawn, `labels` their
    legend names; `points`: the final accuracies beside them (`tlres.analysis.report.final_points`);
    `data_label`: what the titles say of the data; `mixed`: the points are on different data.
    """
    plt = pyplot()
    figures = {"fig2_accuracy.png": _fig2(plt, plotted, points, labels, data_label, mixed),
               "fig3_loss.png": _fig3(plt, plotted, labels, data_label),
               "fig4_confusion.png": _fig4(plt, plotted, labels)}
    panels = {}
    for name, (fig, titles) in figures.items():
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        panels[name] = titles
        plt.close(fig)
    return panels


def _fig2(plt, plotted, points, labels, data_label, mixed):
    """Fig. 2: validation accuracy per epoch, and final accuracy beside the paper's: (figure, titles)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for name, runs in plotted.items():
        _band(ax, runs, "val_accuracy", labels[name])
    ax.set(xlabel="epoch", ylabel="validation accuracy",
           title=f"Fig. 2: validation accuracy per epoch{data_label} (band: min-max over seeds)")
    epoch_axis(ax, _epochs(plotted))
    ax.grid(alpha=0.3), ax.legend()
    ys = [p["accuracy"] for p in points]
    errs = [(p["accuracy"] - p["ci95"][0], p["ci95"][1] - p["accuracy"]) for p in points]
    colors = ["0.5" if p["paper"] else "C0" for p in points]
    bx.errorbar(range(len(ys)), ys, yerr=np.array(errs).T, fmt="none", capsize=4, ecolor="k")
    for i, (y, c) in enumerate(zip(ys, colors)):
        bx.plot(i, y, "o", color=c)
        bx.annotate(f"{y * 100:.2f}%", (i, y), textcoords="offset points", xytext=(8, 0), fontsize=8)
    bx.set_xticks(range(len(points)), [p["label"] for p in points], fontsize=7)
    bx.set(ylabel="final test accuracy (95% interval)",
           title="final accuracy: the paper's (grey, one batch) and ours"
                 + ("\neach on its own data (below): not comparable across data" if mixed else ""))
    bx.grid(alpha=0.3)
    return fig, [ax.get_title(), bx.get_title()]


def _fig3(plt, plotted, labels, data_label):
    """Fig. 3: train (solid) and validation (dashed) loss per epoch: (figure, titles)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in plotted.items():
        color = _band(ax, runs, "loss", f"{labels[name]} train")
        _band(ax, runs, "val_loss", f"{labels[name]} validation", "--", color)
    ax.set(xlabel="epoch", ylabel="loss (each run's own training criterion)",
           title=f"Fig. 3: train and validation loss per epoch{data_label}")
    epoch_axis(ax, _epochs(plotted))
    ax.grid(alpha=0.3), ax.legend(fontsize=8)
    return fig, [ax.get_title()]


def _fig4(plt, plotted, labels):
    """Fig. 4: confusion matrices side by side, summed over each group's runs: (figure, titles)."""
    shown = list(plotted.items())[:4]
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 5.5), squeeze=False)
    titles = []
    for ax, (name, runs) in zip(axes[0], shown):
        cm = np.sum([np.asarray(r["metrics"]["confusion_matrix"]) for r in runs], axis=0)
        classes = runs[0]["metrics"].get("class_names") or [str(i) for i in range(len(cm))]
        acc = np.trace(cm) / cm.sum()
        seeds = f", summed over {len(runs)} seeds" if len(runs) > 1 else ""
        plot_confusion(ax, cm, classes, f"Fig. 4: {labels[name]}{seeds}\naccuracy {acc * 100:.2f}% of {cm.sum()}")
        titles.append(ax.get_title())
    return fig, titles


# ---------------------------------------------------------------- compare and parity

def compare_curves(sides, path):
    """One PNG: validation accuracy (left), train and validation loss (right), per side.

    `sides`: [(label, what it is, e.g. " (digits, mean of 3)", {"val_accuracy" | "loss" |
    "val_loss": [(epoch, value), ...]})]; the x axis spans the validation-accuracy epochs."""
    plt = pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, n, curves) in enumerate(sides):
        color = f"C{i}"
        c = curves["val_accuracy"]
        if c:
            ax_acc.plot(*zip(*c), "o-", color=color, label=label + n)
        for key, style in (("loss", "--"), ("val_loss", "-")):
            c = curves[key]
            if c:
                ax_loss.plot(*zip(*c), style, marker="o", color=color,
                             label=f"{label} {'train' if key == 'loss' else 'val'}{n}")
    epochs = sorted({e for _, _, curves in sides for e, _ in curves["val_accuracy"]})
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss (dashed: train, solid: validation)")
    for ax in (ax_acc, ax_loss):
        epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise TlresError(f"--plot {path}: cannot write it ({e.strerror})") from None
    finally:
        plt.close(fig)


def parity_steps(seeds, path):
    """One panel per seed: per training step, Keras' and PyTorch float32's relative distance
    from the float64 loss, and the bound. `seeds`: {seed: {"steps", "keras", "torch32",
    "bound": per-step lists}}."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(seeds), figsize=(4.5 * len(seeds), 3.6), squeeze=False, sharey=True)
    for ax, (seed, r) in zip(axes[0], seeds.items()):
        ax.semilogy(r["steps"], [max(v, 1e-12) for v in r["keras"]], label="Keras float32")
        ax.semilogy(r["steps"], [max(v, 1e-12) for v in r["torch32"]], label="PyTorch float32", alpha=0.8)
        ax.semilogy(r["steps"], r["bound"], "k--", label="bound")
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("|loss - float64 loss| / loss")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
