"""The aggregate's figures start and end the same way: matplotlib without a display (a node
has none), and a PNG written whole, its folder made, the figure closed so that a grid of many
figures does not hold them all in memory. Only jobs/ draws; the report layer makes tables.
"""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here, on first use: most jobs draw nothing)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def distinct_colours(labels) -> dict:
    """One colour per label, none repeated: matplotlib's default cycle (tab10) repeats after
    10 series, and a benchmark's figure has more (every method, its variants, the real rows)."""
    plt = pyplot()
    labels = list(dict.fromkeys(labels))
    if len(labels) <= 20:
        palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
        return {label: palette(i) for i, label in enumerate(labels)}
    palette = plt.get_cmap("turbo")
    return {label: palette(i / (len(labels) - 1)) for i, label in enumerate(labels)}


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close `fig`; the path written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
