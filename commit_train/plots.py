"""End-of-run training plot drawn from the tracker's in-memory history.

Drawing from :attr:`commit_train.tracking.RunTracker.history` rather than from the MLflow
server means the plot exists even when tracking is disabled or the server was down, and
costs no queries. Figures are built with the object-oriented API on an explicit Agg
canvas, so nothing touches pyplot's global state or needs a display (training may run in
a container or a background thread). The PNG is written to a temporary file and renamed,
so a reader never sees a half-written image.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

History = Mapping[str, Sequence[tuple[int, float]]]

# (panel title, metric names in drawing order, y-axis scale); a panel is drawn only when
# at least one of its metrics has points. Names follow METHOD.md §7.
PANELS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Loss", ("loss/train", "loss/val", "loss/ce", "loss/aux"), "linear"),
    ("Learning rate", ("lr/encoder", "lr/llm"), "log"),
    ("Learning dynamics κ", ("balance/kappa", "balance/kappa_avg"), "log"),
    ("Encoder share", ("balance/share_encoder",), "linear"),
)


def _series(points: Sequence[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """Finite points sorted by step (a resumed run may log steps out of order)."""
    pts = sorted((int(s), float(v)) for s, v in points if math.isfinite(float(v)))
    return [s for s, _ in pts], [v for _, v in pts]


def plot_training(history: History, out_png: str | Path, title: str | None = None) -> Path:
    """Write one PNG with a panel per metric group present in ``history``; return its path.

    Log scales are used for learning rates and κ (they span orders of magnitude) but fall
    back to linear when a series has values ≤ 0. With no plottable metric at all the PNG
    still gets written, saying so, so downstream artifact logging does not need a branch.
    """
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    panels = []
    for name, keys, scale in PANELS:
        series = {k: _series(history[k]) for k in keys if k in history}
        series = {k: xy for k, xy in series.items() if xy[0]}
        if series:
            panels.append((name, series, scale))

    ncols = 2 if len(panels) > 1 else 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(6.0 * ncols, 3.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no training metrics recorded", ha="center", va="center")
    for i, (name, series, scale) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key, (steps, values) in series.items():
            marker = "o" if len(steps) < 30 else None
            ax.plot(steps, values, label=key, marker=marker, markersize=3, linewidth=1.2)
        if scale == "log" and all(v > 0 for _, vs in series.values() for v in vs):
            ax.set_yscale("log")
        if name == "Encoder share":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)

    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".png", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
