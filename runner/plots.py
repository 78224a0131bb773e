"""Learning-curve figure of one run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def learning_curve(curves: dict[str, list[list[float]]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for key, style in (("return_mean", "-"), ("test_return_mean", "-o")):
        pts = curves.get(key) or []
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3, label=key)
    ax.set_xlabel("t_env")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
