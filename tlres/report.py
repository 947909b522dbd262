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


def run_figures(out, history, metrics, class_names, title=""):
    """accuracy.png, loss.png and confusion.png in `out`."""
    plt = _plt()
    epochs = [r["epoch"] for r in history]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r["accuracy"] for r in history], label="train accuracy")
    ax.plot(epochs, [r["val_accuracy"] for r in history], label="validation accuracy")
    ax.plot(epochs, [r["val_mean_class_accuracy"] for r in history], "--", label="validation mean per-class")
    ax.set(xlabel="epoch", ylabel="accuracy", title=f"Accuracy per epoch: {title}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r["loss"] for r in history], label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], label="validation loss")
    ax.set(xlabel="epoch", ylabel="loss (training criterion)", title=f"Loss per epoch: {title}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    plot_confusion(ax, metrics["confusion_matrix"], class_names,
                   f"{title}: accuracy {metrics['accuracy']:.4f} (n={metrics['num_test']})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "confusion.png"), dpi=120)
    plt.close(fig)
