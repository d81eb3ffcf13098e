"""Is BKD's tipping point where the paper says it is? The paper's Fig. 3 experiment, on any preset.

BKD is trained *without* its robust stage (``robust_stage=false``: the teacher stays on cross-entropy, as in
the paper's Sec. 5.2, "trained without robust training for 75 epochs") at a constant learning rate, and every
epoch records:

  (a) the blind student's mean max probability (Eq. 4) and the detected tipping epoch,
  (b) the teacher's (= plain cross-entropy's) test accuracy, and its memorisation: the mean P_T(ȳ|x) it gives
      the wrong labels during the training pass,
  (c) the precision / recall / F1 of the Otsu split (P_A < mu1) had it been made at that epoch.

The paper's claim is that (a) peaks where (b) starts to fall under high noise, and that (c) is near its best
there. The table reports, per run: the tipping epoch, the epoch of the best split F1 and both F1s, the
teacher's best test accuracy and its epoch, and the teacher's accuracy and wrong-label fit at the tipping epoch
and at the end. One figure per setting (seed 0): the three panels of Fig. 3.

    python benchmarks/bkd_tipping.py --preset digits --seeds 0 1 2
    python benchmarks/bkd_tipping.py --preset cifar10n --label-sets worst --train-subset 5000 --epochs 60 \\
        --eval-every 2

Presets and data options are those of ``benchmarks/bkd_vs_ce.py``, except that the learning rate is constant
(``--lr``, default the preset's) and ``--augment`` can replace the preset's augmentation policy.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bkd_vs_ce import (add_preset_arguments, preset_config, preset_label_sets,  # noqa: E402  (presets shared
                       results_header, say_seed, write_results)                # with the BKD-vs-CE benchmark)

from noisykd.reproduce import SeedRun, Setting, run_seeds  # noqa: E402


def diagnostic_config(args, label_set: str | None, out_dir: Path) -> dict:
    cfg = preset_config(args, "bkd", label_set, out_dir)
    cfg["method_args"]["robust_stage"] = False
    cfg["optim"]["schedule"] = "constant"
    cfg["optim"].pop("milestones", None)
    if args.lr is not None:
        cfg["optim"]["lr"] = args.lr
    if args.augment is not None:
        cfg["augment"] = {"policy": args.augment} if args.augment == "none" else {**cfg["augment"],
                                                                                  "policy": args.augment}
    return cfg


def _evaluated(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["epoch"], r[key]) for r in history if r.get(key) is not None]


def _at_or_before(points: list[tuple[int, float]], epoch: int) -> tuple[int, float] | None:
    """The last evaluated (epoch, value) at or before ``epoch`` (test accuracy is not measured every epoch)."""
    earlier = [p for p in points if p[0] <= epoch]
    return earlier[-1] if earlier else None


def analyse(run: SeedRun) -> dict:
    """The Fig. 3 series and the table's numbers of one seed's run folder."""
    s = run.summary
    history = run.history()
    with open(run.out_dir / "bkd_split_quality.csv") as f:
        quality = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    samples = np.load(run.out_dir / "samples.npz")
    rows = samples["in_train"] == 1                                  # training samples (not validation)
    wrong = samples["is_noisy"].astype(bool) & rows
    teacher_on_wrong = np.nanmean(samples["p_teacher_history"][wrong].astype(np.float64), axis=0).tolist()
    split = s["method_summary"]["split"] or {}
    tipping = split.get("fitting_epoch")
    teacher = _evaluated(history, "test_acc_teacher")
    best_teacher = max(teacher, key=lambda p: p[1])
    best_split = max(quality, key=lambda r: r["f1"])
    at_tip = next((r for r in quality if int(r["epoch"]) == tipping), None) if tipping else None
    teacher_at_tip = _at_or_before(teacher, tipping) if tipping else None
    return {
        "tipping_epoch": tipping, "fallback": split.get("fallback"),
        "split_f1_at_tipping": at_tip["f1"] if at_tip else None,
        "best_split_epoch": int(best_split["epoch"]), "best_split_f1": best_split["f1"],
        "teacher_best_epoch": best_teacher[0], "teacher_best_acc": best_teacher[1],
        "teacher_acc_at_tipping": teacher_at_tip[1] if teacher_at_tip else None,
        "teacher_acc_at_tipping_epoch": teacher_at_tip[0] if teacher_at_tip else None,
        "teacher_last_acc": teacher[-1][1],
        "teacher_p_wrong_at_tipping": teacher_on_wrong[tipping - 1] if tipping else None,
        "teacher_p_wrong_last": teacher_on_wrong[-1],
        "noise_rate": s["noise"]["noise_rate"],
        "series": {"mean_max_p_student": s["method_summary"]["mean_max_p_student"],
                   "test_acc_teacher": teacher, "test_acc_student": _evaluated(history, "test_acc_student"),
                   "test_acc_agreement": _evaluated(history, "test_acc"),
                   "teacher_p_wrong_label": teacher_on_wrong,
                   "split_f1": [r["f1"] for r in quality], "split_precision": [r["precision"] for r in quality],
                   "split_recall": [r["recall"] for r in quality]},
        "seconds": run.seconds,
    }


def plot_fig3(run: dict, path: Path, title: str) -> None:
    """The three panels of the paper's Fig. 3 for one run, the tipping epoch marked on each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, tip = run["series"], run["tipping_epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    mm = series["mean_max_p_student"]
    axes[0].plot(range(1, len(mm) + 1), mm, color="tab:purple")
    axes[0].set_ylabel("mean max P_S (Eq. 4)"), axes[0].set_title("(a) blind student confidence")
    for key, label in (("test_acc_teacher", "teacher (CE) test acc"), ("test_acc_student", "student test acc"),
                       ("test_acc_agreement", "agreement P_A test acc")):
        pts = series[key]
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label)
    wrong = series["teacher_p_wrong_label"]
    axes[1].plot(range(1, len(wrong) + 1), wrong, color="tab:red", linestyle=":",
                 label="teacher's mean P_T(wrong label), train")
    axes[1].set_title("(b) accuracy and memorisation"), axes[1].legend(fontsize=7)
    for key, style in (("split_f1", "-"), ("split_precision", ":"), ("split_recall", "--")):
        vals = series[key]
        axes[2].plot(range(1, len(vals) + 1), vals, linestyle=style, label=key.removeprefix("split_"))
    axes[2].set_ylim(0, 1), axes[2].set_title("(c) Otsu split (P_A < mu1) at each epoch"), axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("epoch"), ax.grid(alpha=0.3)
        if tip:
            ax.axvline(tip, color="black", linestyle="--", alpha=0.6)
    fig.suptitle(f"{title}; dashed: detected tipping epoch {tip}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v) -> str:
    """A fraction as a percentage with one decimal, '-' when missing."""
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(results: dict, args, command: str) -> str:
    lines = [f"# BKD tipping point (paper Fig. 3 experiment): {args.preset}", "", f"Command: `{command}`", "",
             f"{results['date']}; {results['machine']}; torch {torch.__version__}; {results['epochs']} epochs at a "
             f"constant lr {results['lr']}; augmentation {results['augment']}; robust stage off (the teacher is "
             f"plain CE throughout).", ""]
    for label_set, runs in results["runs"].items():
        lines += [f"## {label_set} (noise rate {100 * runs[0]['noise_rate']:.1f}%)", "",
                  "| seed | tipping epoch | split F1 at tipping | best split F1 (epoch) | teacher best test acc (epoch) "
                  "| teacher acc at tipping | teacher acc last | teacher P_T(wrong label) at tipping / last | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            tip = "-" if r["tipping_epoch"] is None else f"{r['tipping_epoch']}{' (fallback)' if r['fallback'] else ''}"
            at = r["teacher_acc_at_tipping_epoch"]
            lines.append(
                f"| {r['seed']} | {tip} | {_fmt(r['split_f1_at_tipping'])} | {_fmt(r['best_split_f1'])} "
                f"({r['best_split_epoch']}) | {_fmt(r['teacher_best_acc'])} ({r['teacher_best_epoch']}) | "
                f"{_fmt(r['teacher_acc_at_tipping'])}{'' if at in (None, r['tipping_epoch']) else f' (ep {at})'} | "
                f"{_fmt(r['teacher_last_acc'])} | {_fmt(r['teacher_p_wrong_at_tipping'])} / {_fmt(r['teacher_p_wrong_last'])} | "
                f"{r['seconds']:.0f} |")
        if len(runs) > 1:
            gap = [r["best_split_f1"] - r["split_f1_at_tipping"] for r in runs if r["split_f1_at_tipping"] is not None]
            if gap:
                lines += ["", f"Split F1 lost by splitting at the tipping epoch rather than the best epoch: "
                              f"{100 * statistics.mean(gap):.1f} points on average (max {100 * max(gap):.1f})."]
        lines += ["", f"![Fig. 3, {label_set}, seed {runs[0]['seed']}]({results['figures'][label_set]})", ""]
    lines += ["Accuracies and F1 in %. 'teacher acc at tipping' is the last evaluated epoch at or before the tipping "
              "epoch when the test set is not evaluated every epoch. 'best' epochs are chosen with the truth and "
              "are for analysis only. 'teacher P_T(wrong label)': the teacher's mean probability of the given label over the "
              "wrongly labelled training samples, recorded in the training pass: how far it has memorised them."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_preset_arguments(parser, seeds=[0], label_sets=["worst"])
    parser.add_argument("--lr", type=float, default=None, help="constant learning rate (default: the preset's)")
    args = parser.parse_args()
    out = Path(args.out or f"benchmarks/results/bkd-tipping-{args.preset}")
    results = {**results_header(args), "runs": {}, "figures": {}}
    command = results["command"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for label_set in preset_label_sets(args):
            cfg = diagnostic_config(args, label_set, Path(tmp))
            results.update(epochs=cfg["optim"]["epochs"], lr=cfg["optim"]["lr"], augment=cfg["augment"]["policy"])
            for run in run_seeds(Setting(f"{label_set}/bkd", cfg), args.seeds, tmp, on_seed=say_seed):
                r = analyse(run)
                print(f"    tipping {r['tipping_epoch']} split F1 {r['split_f1_at_tipping']} best "
                      f"{r['best_split_f1']:.3f}@{r['best_split_epoch']} ({r['seconds']:.0f} s)", file=sys.stderr,
                      flush=True)
                results["runs"].setdefault(label_set, []).append({"seed": run.seed, **r})
            figure = out.with_name(f"{out.name}-{label_set.replace(':', '')}.png")
            plot_fig3(results["runs"][label_set][0], figure, f"{args.preset} {label_set}, seed {args.seeds[0]}")
            results["figures"][label_set] = figure.name
    write_results(out, results, markdown(results, args, command))


if __name__ == "__main__":
    main()
