"""Loss curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from .metrics import read_metrics, train_losses


def plot_losses(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path | None:
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    styles = ["-", "--", ":", "-."]
    for index, (label, points) in enumerate(curves.items()):
        if points:
            steps, losses = zip(*points)
            ax.plot(
                steps,
                losses,
                styles[index % len(styles)],
                marker="o",
                markersize=3,
                label=label,
                linewidth=1.6,
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_run_loss(folder, title: str) -> Path | None:
    """loss.png of a RunFolder."""
    return plot_losses({"train loss": train_losses(read_metrics(folder.metrics))}, folder.loss_plot, title)
