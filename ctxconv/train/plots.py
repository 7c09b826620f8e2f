"""PNG of the training curves from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(metrics_path: Path, out_path: Path) -> Path:
    """Loss and accuracies per epoch, one colour per block."""
    rows = read_metrics(metrics_path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    blocks = sorted({r["block"] for r in rows})
    for b in blocks:
        sub = [(i, r) for i, r in enumerate(rows) if r["block"] == b]
        steps = [i + 1 for i, _ in sub]
        ax_loss.plot(steps, [r["train_loss"] for _, r in sub], marker=".", label=f"block {b}")
        ax_acc.plot(steps, [r["val_acc"] for _, r in sub], marker=".", label=f"val, blocks <= {b}")
        ax_acc.plot(
            steps, [r["train_acc"] for _, r in sub], ls=":", alpha=0.6, label=f"train, block {b}"
        )
    ax_loss.set(xlabel="epoch (all blocks in sequence)", ylabel="local loss", title="Local loss")
    ax_acc.set(
        xlabel="epoch (all blocks in sequence)",
        ylabel="accuracy",
        title="Accuracy (validation: scores summed over trained blocks)",
    )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
