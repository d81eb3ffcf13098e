"""Diagnostic plots people would rather look at than read: score histograms with thresholds, tipping points,
per-head accuracies. Each function writes one PNG and returns nothing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_score_histogram(scores: np.ndarray, path: Path, *, is_noisy: np.ndarray | None = None,
                         thresholds: dict[str, float] | None = None, title: str = "",
                         xlabel: str = "P_A(y = given label | x)", bins: int = 50) -> None:
    """Histogram of per-sample scores in [0, 1] (e.g. BKD's P_A at the fitting epoch, the paper's Fig. 1):
    clean samples green and wrongly labelled ones red when the truth is known; vertical lines at the
    thresholds (e.g. mu1, s, mu2)."""
    plt = _pyplot()
    scores = np.asarray(scores, dtype=float)
    keep = ~np.isnan(scores)
    fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.linspace(0, 1, bins + 1)
    if is_noisy is not None:
        noisy = np.asarray(is_noisy, dtype=bool)
        ax.hist(scores[keep & ~noisy], bins=edges, color="tab:green", alpha=0.6, label="clean label")
        ax.hist(scores[keep & noisy], bins=edges, color="tab:red", alpha=0.6, label="wrong label")
    else:
        ax.hist(scores[keep], bins=edges, color="tab:blue", alpha=0.7, label="all samples")
    for (name, value), style in zip((thresholds or {}).items(), ("--", "-", ":")):
        ax.axvline(value, color="black", linestyle=style, label=f"{name} = {value:.3f}")
    ax.set_xlabel(xlabel), ax.set_ylabel("samples"), ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_universal_split(scores: np.ndarray, split: dict, path: Path, *, true_type: np.ndarray | None = None,
                         thresholds: tuple[float, float] = (0.3, 0.9), title: str = "", bins: int = 50) -> None:
    """MODUL's split: a histogram of the normalised teacher scores in [0, 1] (stacked by true type, clean /
    closed-set / open-set, when known), the fitted mixture's density per group of components (``split``: the
    summary of ``noisykd.detect.universal.UniversalSplit``) scaled to the histogram, and the two thresholds."""
    plt = _pyplot()
    scores = np.asarray(scores, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    names, colours = ("clean", "closed-set noisy", "open-set noisy"), ("tab:green", "tab:red", "tab:purple")
    if true_type is not None:
        ax.hist([scores[true_type == t] for t in range(3)], bins=edges, stacked=True, color=colours, alpha=0.55,
                label=[f"true {n}" for n in names])
    else:
        ax.hist(scores, bins=edges, color="tab:blue", alpha=0.6, label="all samples")
    grid = np.linspace(0, 1, 400)
    means, variances = np.asarray(split["means"]), np.asarray(split["variances"])
    weights, groups = np.asarray(split["weights"]), np.asarray(split["component_group"])
    density = weights[:, None] * np.exp(-(grid[None] - means[:, None]) ** 2 / (2 * variances[:, None])) \
        / np.sqrt(2 * np.pi * variances[:, None])
    scale = len(scores) * (edges[1] - edges[0])  # density -> expected samples per bin
    for g, (name, colour) in enumerate(zip(names, colours)):
        if (groups == g).any():
            ax.plot(grid, scale * density[groups == g].sum(0), color=colour, linewidth=2,
                    label=f"GMM: {name} components ({int((groups == g).sum())})")
    for value, style in zip(thresholds, ("--", ":")):
        ax.axvline(value, color="black", linestyle=style, linewidth=1, label=f"threshold {value:g}")
    ax.set_xlabel("teacher SL loss of the given label, min-max normalised"), ax.set_ylabel("samples")
    ax.legend(fontsize=7), ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _evaluated(epochs: list, values: list) -> tuple[list, list]:
    """The (epoch, value) pairs whose value exists: with ``eval_every`` > 1 most epochs have no test accuracy,
    and NaN gaps would leave nothing but isolated points to draw."""
    pairs = [(e, v) for e, v in zip(epochs, values) if v is not None and not math.isnan(v)]
    return [e for e, _ in pairs], [v for _, v in pairs]


def plot_tipping_point(series: list[float], path: Path, *, tipping_epoch: int | None,
                       test_accuracy: list[float | None] | None = None,
                       series_label: str = "mean max P_S (Eq. 4)", title: str = "") -> None:
    """A per-epoch series (BKD: mean max student probability, Fig. 3a) with the detected tipping epoch
    (1-based), and the test accuracy on a second axis (Fig. 3b)."""
    plt = _pyplot()
    epochs = np.arange(1, len(series) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, series, color="tab:purple", label=series_label)
    ax.set_xlabel("epoch"), ax.set_ylabel(series_label, color="tab:purple")
    if tipping_epoch is not None:
        ax.axvline(tipping_epoch, color="black", linestyle="--", label=f"tipping epoch {tipping_epoch}")
    if test_accuracy is not None:
        twin = ax.twinx()
        x, y = _evaluated(list(epochs[:len(test_accuracy)]), test_accuracy)
        twin.plot(x, y, color="tab:orange", marker=".", label="test accuracy")
        twin.set_ylabel("test accuracy", color="tab:orange")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_head_accuracies(history: list[dict], heads: dict[str, str], path: Path, *, title: str = "",
                         vertical: int | None = None) -> None:
    """Test accuracy per epoch of several prediction heads (BKD: teacher, student, agreement; Fig. 4).
    ``heads`` maps a metrics key (e.g. ``test_acc_teacher``) to its label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [r["epoch"] for r in history]
    for key, label in heads.items():
        ax.plot(*_evaluated(epochs, [r.get(key) for r in history]), marker=".", label=label)
    if vertical is not None:
        ax.axvline(vertical, color="black", linestyle="--", label=f"epoch {vertical}")
    ax.set_xlabel("epoch"), ax.set_ylabel("test accuracy"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_split_quality(rows: list[dict], path: Path, *, tipping_epoch: int | None, title: str = "") -> None:
    """Precision, recall and F1 of the Otsu split made at every epoch (BKD Fig. 3c), with the tipping epoch.
    ``rows`` as returned by :func:`noisykd.detect.split_quality_by_epoch`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [r["epoch"] for r in rows]
    for key, style in (("f1", "-"), ("precision", ":"), ("recall", "--")):
        ax.plot(epochs, [r[key] for r in rows], linestyle=style, label=key)
    if tipping_epoch is not None:
        ax.axvline(tipping_epoch, color="black", linestyle="--", alpha=0.6, label=f"tipping epoch {tipping_epoch}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch of the split"), ax.set_ylabel("detection of wrong labels"), ax.set_ylim(0, 1)
    ax.grid(alpha=0.3), ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cmd_selection(history: list[dict], path: Path, *, title: str = "") -> None:
    """CMD per epoch (two panels): left, the share of samples whose peer knowledge was selected (A<-B, B<-A)
    and, when the truth is known, the share of those selected peer predictions that are right; right, the
    threshold chi (Eq. 12) and each model's mean eps. ``history``: the rows of metrics.csv."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in history]
    for key, label, style in (("train_selected_b2a", "selected A<-B", "-"), ("train_selected_a2b", "selected B<-A", "-"),
                              ("train_selected_right_b2a", "right among A<-B", "--"),
                              ("train_selected_right_a2b", "right among B<-A", "--")):
        xs, ys = _evaluated(epochs, [r.get(key) for r in history])
        if xs:
            left.plot(xs, ys, linestyle=style, marker=".", label=label)
    left.set_ylim(0, 1.02), left.set_xlabel("epoch"), left.set_ylabel("share of training samples / of selected")
    left.grid(alpha=0.3), left.legend(fontsize=8), left.set_title("peer knowledge selected")
    for key, label in (("train_epsilon_a", "mean eps of A"), ("train_epsilon_b", "mean eps of B")):
        xs, ys = _evaluated(epochs, [r.get(key) for r in history])
        if xs:
            right.plot(xs, ys, marker=".", label=label)
    right.set_xlabel("epoch"), right.set_ylabel("eps"), right.grid(alpha=0.3)
    xs, ys = _evaluated(epochs, [r.get("train_chi") for r in history])
    if xs:
        chi_axis = right.twinx()
        chi_axis.plot(xs, ys, color="black", linestyle=":", label="chi (right axis)")
        chi_axis.set_ylabel("chi (nats)"), chi_axis.legend(fontsize=8, loc="lower right")
    right.legend(fontsize=8, loc="upper left"), right.set_title("self trust and selection threshold")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(bins, path: Path, *, title: str = "") -> None:
    """A reliability diagram (NRD Fig. 5): per confidence bin, the accuracy (bars) against the diagonal of
    perfect calibration, the gap to the bin's mean confidence shaded, the ECE in the legend; below, the share
    of predictions per bin. ``bins``: a :class:`noisykd.calibration.Reliability`."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    _draw_reliability(top, bins)
    edges = np.asarray(bins.edges)
    bottom.bar(edges[:-1], [c / max(sum(bins.count), 1) for c in bins.count], width=np.diff(edges), align="edge",
               color="gray", edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence (largest probability)"), bottom.set_ylabel("share"), bottom.grid(alpha=0.3)
    if title:
        top.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability_grid(rows: dict[str, dict[str, object]], path: Path, *, title: str = "") -> None:
    """Reliability diagrams side by side (NRD Fig. 5 compares methods so): one row per setting (e.g. noise
    rate), one column per method. ``rows``: row label -> {column label -> Reliability}; a missing cell is left
    blank. Each panel as :func:`plot_reliability`'s top, its ECE in the legend."""
    plt = _pyplot()
    columns = list(dict.fromkeys(c for cells in rows.values() for c in cells))
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.7 * len(columns), 2.8 * len(rows)),
                             squeeze=False, sharex=True, sharey=True)
    for r, (row, cells) in enumerate(rows.items()):
        for c, column in enumerate(columns):
            ax = axes[r][c]
            if column in cells:
                _draw_reliability(ax, cells[column], legend=False)
                ax.text(0.97, 0.03, f"ECE {100 * cells[column].ece:.2f}%", transform=ax.transAxes, ha="right",
                        va="bottom", fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
                ax.set_title(f"{column}, {row}", fontsize=8)
            else:
                ax.axis("off")
            ax.set_ylabel("accuracy" if c == 0 else "")
            if r == len(rows) - 1:
                ax.set_xlabel("confidence")
    handles, labels = next(ax for ax in np.ravel(axes) if ax.axison).get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_reliability(ax, bins, legend: bool = True) -> None:
    """Accuracy per confidence bin (bars), the gap to the bin's mean confidence (hatched), the diagonal."""
    edges = np.asarray(bins.edges)
    lo, width = edges[:-1], np.diff(edges)
    filled = [i for i, c in enumerate(bins.count) if c]
    ax.bar(lo[filled], [bins.accuracy[i] for i in filled], width=width[filled], align="edge", color="tab:blue",
           edgecolor="black", linewidth=0.5, label="accuracy")
    gap_low = [min(bins.accuracy[i], bins.confidence[i]) for i in filled]
    gap = [abs(bins.confidence[i] - bins.accuracy[i]) for i in filled]
    ax.bar(lo[filled], gap, bottom=gap_low, width=width[filled], align="edge", color="tab:red", alpha=0.35,
           edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.grid(alpha=0.3)
    ax.set_ylabel("accuracy")
    if legend:
        ax.legend(fontsize=8, loc="upper left", title=f"ECE {100 * bins.ece:.2f}% ({len(bins.count)} bins)",
                  title_fontsize=9)


def plot_learning_curves(rows: dict[str, dict[str, dict]], path: Path, *, title: str = "") -> None:
    """Memorisation at a glance: per row (e.g. noise rate) the test accuracy (left) and the share of wrongly
    labelled training samples fit (right) against the epoch, one line per method. ``rows``: row label ->
    {method -> {"epoch": [...], "test_acc": [...], "fit_wrong": [...]}}, fractions, None where not measured."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.2 * len(rows)), squeeze=False)
    for r, (row, methods) in enumerate(rows.items()):
        for c, (key, label) in enumerate((("test_acc", "test accuracy"), ("fit_wrong", "wrong labels fit"))):
            ax = axes[r][c]
            for method, curve in methods.items():
                epochs, values = _evaluated(curve["epoch"], curve[key])
                if values:
                    ax.plot(epochs, values, marker="." if key == "test_acc" else None, label=method)
            ax.set_title(f"{label}, {row}", fontsize=9), ax.set_xlabel("epoch"), ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[r][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
