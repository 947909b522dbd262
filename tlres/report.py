"""Figures: the paper's Figs. 2-4 for one run.

Fig. 2: validation accuracy per epoch; Fig. 3: train and validation loss per
epoch; Fig. 4: the confusion matrix on the whole test split.
"""

import os

import numpy as np


def _plt():
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


def _curves(plt, path, epochs, history, series, ylabel, title):
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style, label in series:
        ax.plot(epochs, [r[key] for r in history], style, label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_figures(out, history, metrics, class_names, title=""):
    """accuracy.png, loss.png and confusion.png in `out`."""
    plt = _plt()
    epochs = [r["epoch"] for r in history]

    _curves(plt, os.path.join(out, "accuracy.png"), epochs, history,
            [("accuracy", "-", "train accuracy"), ("val_accuracy", "-", "validation accuracy"),
             ("val_mean_class_accuracy", "--", "validation mean per-class")],
            "accuracy", f"Accuracy per epoch: {title}")
    _curves(plt, os.path.join(out, "loss.png"), epochs, history,
            [("loss", "-", "train loss"), ("val_loss", "-", "validation loss")],
            "loss (training criterion)", f"Loss per epoch: {title}")

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    plot_confusion(ax, metrics["confusion_matrix"], class_names,
                   f"{title}: accuracy {metrics['accuracy']:.4f} (n={metrics['num_test']})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "confusion.png"), dpi=120)
    plt.close(fig)
