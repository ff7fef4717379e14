"""Pictures of detection: ROC curves (one panel per model, one curve per suspicious set).

Drawn like plot.py: matplotlib's object API on the Agg canvas, no pyplot.
"""
from __future__ import annotations

import math

from tinyar import metrics
from tinyar.plot import _figure, _save


def roc_panels(scores, path, title=None, n_cols=None):
    """Save ROC curves to path (PNG).

    scores: {panel name (e.g. a model): (clean scores, {set name: scores of that set})}.
    Each panel draws, for each set, the curve of flagging scores >= threshold (clean =
    negatives, the set = positives), its AUROC in the legend, and the chance diagonal.
    """
    if not scores:
        raise ValueError("roc_panels: nothing to draw")
    n = len(scores)
    n_cols = n_cols or min(n, 3)
    n_rows = int(math.ceil(n / n_cols))
    fig = _figure(3.6 * n_cols, 3.4 * n_rows + (0.4 if title else 0.0))
    for k, (panel, (clean, sets)) in enumerate(scores.items()):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        for name, values in sets.items():
            fpr, tpr, _ = metrics.roc_curve(clean, values)
            ax.plot(fpr, tpr, label=f"{name} ({metrics.auroc(clean, values):.2f})", linewidth=1.5)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("false positive rate (clean flagged)", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right", title="set (AUROC)", title_fontsize=6)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
