"""The practitioner's pipeline against plain training, on real images with realistic wrong labels.

Usage:
    python benchmarks/practitioner.py --data fashion|cifar10n [--shared ../shared/data] [--cifar-root DIR]
                                      [--seeds 0 1 2] [--epochs 40] [--folds 4] [--threads 2]
                                      [--variants default drop ...] [--work /tmp/noisykd-practitioner]
                                      [--out benchmarks/results/practitioner-DATA]

The data (``benchmarks/practitioner_data.py``) is exported once to class folders, as a user's own photos: the
runs read ``folder:ROOT`` and never see the truth, which this script keeps aside and scores against. Every run
uses noisykd's defaults (small_cnn, SGD 0.05 with a cosine decay, weak augmentation, 10% stratified noisy
validation, ``best.pt``) but the epochs. Per training seed:

1. **CE**: cross-entropy on the labels as given (``OUT/noisy`` of the pipeline), and **BKD** (noisykd's
   earlier recipe).
2. **Detectors**, on the same training samples (CE's): CE's own (the GMM on its final loss), confident learning
   on CE's final in-sample probabilities, BKD's own (P_A < mu1), and the rules on the K-fold cross-validated
   probabilities (``noisykd.crossval``): confident learning (cleanlab's ``find_label_issues``, which is the
   ``cv`` default), Otsu mu1, the GMM, argmax; and cv + in-sample averaged. Precision of the top 100 and 300,
   AUROC, AUPRC (of the ranking), F1 / precision / recall of the flagged set.
3. **Cleaning and retraining** (``noisykd.pipeline.train_clean``: the same CE run on the cleaned labels, the
   same validation and test images, as many optimiser steps unless a variant says otherwise), one per variant
   (``VARIANTS``): the default of ``noisykd train-clean`` and the alternatives; the in-sample variants use no
   folds (CE's own flags), the others the K-fold ones. Per variant: the share of wrong labels after cleaning (true),
   the share of labels changed, test accuracy at the best noisy-validation epoch and at the last, the training
   time of the whole pipeline (noisy run + folds + retraining).

Outputs: ``OUT.md`` (tables, mean ± std over seeds, the targets held / not held, the command), ``OUT.json``
(every per-seed number, configs, versions) and ``OUT.png`` (test accuracy and wrong-label share per pipeline).
Run folders go to ``--work`` (reused when run again: a killed benchmark continues).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import practitioner_data  # noqa: E402

from noisykd.clean import CleaningRule, plan_cleaning  # noqa: E402
from noisykd.config import load_config  # noqa: E402
from noisykd.crossval import CrossValidated, cv_path  # noqa: E402
from noisykd.detect import detection_metrics, find_label_issues  # noqa: E402
from noisykd.pipeline import DEFAULT_DETECTOR, DEFAULT_FOLDS, DEFAULT_RULE, train_clean  # noqa: E402
from noisykd.detect.from_run import read_samples  # noqa: E402
from noisykd.reproduce import read_history, train_or_reuse  # noqa: E402

#: name -> (what it is, rule, detector, match_steps); the one with DEFAULT_RULE, DEFAULT_DETECTOR and matched steps
#: is train-clean's default
VARIANTS = {
    "drop": ("drop every flagged label", CleaningRule(action="drop"), "cv", True),
    "relabel-keep": ("relabel where confident, keep the other suspects", CleaningRule(action="relabel", rest="keep"),
                     "cv", True),
    "relabel-drop": ("relabel where confident, drop the other suspects", CleaningRule(action="relabel", rest="drop"),
                     "cv", True),
    "drop-top10": ("drop the 10% most likely wrong", CleaningRule(action="drop", fraction=0.1), "cv", True),
    "relabel-all": ("relabel every flagged label (noisykd 0.1's clean --action relabel)",
                    CleaningRule(action="relabel", relabel_min=0.0, given_max=1.0), "cv", True),
    "insample-drop": ("in-sample GMM flags dropped, retrained for the same epochs (noisykd 0.1's README)",
                      CleaningRule(action="drop"), "gmm", False),
    "insample-drop-steps": ("in-sample GMM flags (no folds) dropped, retrained for as many steps",
                            CleaningRule(action="drop"), "gmm", True),
}
DETECTORS = ("ce_own", "ce_insample_cl", "bkd_own", "cv_confident_learning", "cv_otsu_mu1", "cv_gmm", "cv_argmax",
             "cv_plus_insample_cl")
DETECTOR_LABELS = {
    "ce_own": "CE's own: GMM on the final loss (in-sample; noisykd's default)",
    "ce_insample_cl": "confident learning on CE's final probabilities (in-sample)",
    "bkd_own": "BKD's own: P_A < mu1 at the fitting epoch",
    "cv_confident_learning": "cv: confident learning = cleanlab on K-fold probabilities (noisykd's cv default)",
    "cv_otsu_mu1": "cv: Otsu mu1 on K-fold probabilities",
    "cv_gmm": "cv: GMM on K-fold probabilities",
    "cv_argmax": "cv: argmax != label on K-fold probabilities",
    "cv_plus_insample_cl": "cv + in-sample probabilities averaged, confident learning",
}


def log(msg: str) -> None:
    print(f"[practitioner {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_config(args, root: Path, method: str, seed: int, out: Path) -> dict:
    """noisykd's defaults on the user's folder, but the epochs (and threads)."""
    return load_config(overrides=[f"method={method}", f"data.spec=folder:{root}", f"optim.epochs={args.epochs}",
                                  f"seed={seed}", f"threads={args.threads}", f"out_dir={out}"]).to_dict()


def training_seconds(run_dir: Path) -> float:
    """Sum of the engine's epoch times of a run (its training, without evaluation): robust to reuse."""
    return sum(row["epoch_time_s"] for row in read_history(run_dir))


def wall_seconds(run_dir: Path) -> float:
    """From a run's first session start to its finished.json: the run's wall time, evaluation included."""
    start = json.loads((run_dir / "run_info.json").read_text())["sessions"][0]["started"]
    end = json.loads((run_dir / "finished.json").read_text())["finished"]
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def samples_of(run_dir: Path) -> dict[str, np.ndarray]:
    return read_samples(run_dir / "samples.npz")


def ranking_metrics(is_noisy: np.ndarray, flagged: np.ndarray, noise_score: np.ndarray) -> dict:
    m = detection_metrics(is_noisy, flagged, noise_score)
    order = np.lexsort((np.arange(len(noise_score)), -noise_score))
    out = {k: m[k] for k in ("f1", "precision", "recall", "auroc", "auprc", "n_flagged")}
    out.update(p_at_100=float(is_noisy[order[:100]].mean()), p_at_300=float(is_noisy[order[:300]].mean()))
    return out


def detectors(noisy: Path, bkd: Path, truth_by_index: np.ndarray) -> dict:
    """Every detector's metrics on the CE run's training samples (module docstring, step 2)."""
    ce, bk = samples_of(noisy), samples_of(bkd)
    rows = np.flatnonzero(ce["in_train"] == 1)
    given = ce["given_label"][rows]
    is_noisy = given != truth_by_index[rows]
    insample = ce["pred_probs"][rows].astype(np.float64)
    cv = CrossValidated.load(cv_path(noisy))
    cv_probs = cv.pred_probs[np.searchsorted(cv.index, rows)].astype(np.float64)  # cv.index is sorted
    cv_probs /= cv_probs.sum(1, keepdims=True)
    out = {"ce_own": ranking_metrics(is_noisy, ce["flagged"][rows] == 1, ce["noise_score"][rows].astype(float))}
    issues = find_label_issues(given, insample, method="confident_learning")
    out["ce_insample_cl"] = ranking_metrics(is_noisy, issues.is_label_issue, issues.noise_score)
    if not np.array_equal(bk["given_label"][rows], given) or (bk["in_train"][rows] != 1).any():
        raise RuntimeError("BKD trained on other samples or labels than CE; this is a bug")
    bkd_score = bk["noise_score"][rows].astype(float)
    out["bkd_own"] = ranking_metrics(is_noisy, bk["flagged"][rows] == 1,
                                     np.nan_to_num(bkd_score, nan=np.nanmax(bkd_score)))
    for rule in ("confident_learning", "otsu_mu1", "gmm", "argmax"):
        issues = find_label_issues(given, cv_probs, method=rule)
        out[f"cv_{rule}"] = ranking_metrics(is_noisy, issues.is_label_issue, issues.noise_score)
    both = (cv_probs + insample) / 2
    issues = find_label_issues(given, both, method="confident_learning")
    out["cv_plus_insample_cl"] = ranking_metrics(is_noisy, issues.is_label_issue, issues.noise_score)
    # cleanlab's own ranking on the same cross-validated probabilities (its AUROC is the cv rows' by construction)
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(given, cv_probs)
    out["cleanlab_cv_auroc"] = detection_metrics(is_noisy, np.zeros(len(rows), bool), 1 - quality)["auroc"]
    return out


RELABEL_GRID = ((0.5, 0.5), (0.5, 0.3), (0.7, 0.2), (0.8, 0.1), (0.9, 0.05), (0.95, 0.02))


def relabel_grid(noisy: Path, truth_by_index: np.ndarray) -> dict:
    """For each (relabel_min, given_max): how many cv suspects the rule relabels, how many to their true class,
    and how many whose given label was right (new errors)."""
    from noisykd.detect import most_likely_other

    cv = CrossValidated.load(cv_path(noisy))
    probs = cv.pred_probs.astype(np.float64)
    probs /= probs.sum(1, keepdims=True)
    given, truth = cv.given_label, truth_by_index[cv.index]
    issues = find_label_issues(given, probs, method="confident_learning")
    suggested = most_likely_other(given, probs)
    out = {}
    for lo, hi in RELABEL_GRID:  # the rule clean and train-clean apply (noisykd.clean.plan_cleaning)
        rule = CleaningRule(action="relabel", relabel_min=lo, given_max=hi)
        chosen = plan_cleaning(issues.noise_score, issues.is_label_issue, given, suggested, probs, rule).relabel
        out[f"{lo}/{hi}"] = {"relabel_min": lo, "given_max": hi, "n": int(chosen.sum()),
                             "right": int((chosen & (suggested == truth)).sum()),
                             "was_right": int((chosen & (given == truth)).sum())}
    return out


def one_seed(args, root: Path, seed: int, truth_paths: dict) -> dict:
    work = Path(args.work) / args.data / f"seed-{seed}"
    record: dict = {"seed": seed}
    noisy_cfg = run_config(args, root, "ce", seed, work / "noisy")
    log(f"seed {seed}: CE on the labels as given")
    train_or_reuse(noisy_cfg)
    classes = json.loads((work / "noisy" / "summary.json").read_text())["classes"]
    paths = samples_of(work / "noisy")["path"]
    truth = practitioner_data.true_labels(paths, classes, truth_paths)
    log(f"seed {seed}: BKD")
    train_or_reuse(run_config(args, root, "bkd", seed, work / "bkd"))
    for name, run in (("ce", work / "noisy"), ("bkd", work / "bkd")):
        summary = json.loads((run / "summary.json").read_text())
        record[name] = {"test_best": summary["best_noisy_val"]["test_acc"], "test_last": summary["last"]["test_acc"],
                        "train_s": training_seconds(run), "wall_s": wall_seconds(run)}
    record["variants"] = {}
    for name in args.variants:
        what, rule, detector, match = VARIANTS[name]
        log(f"seed {seed}: variant {name} ({what})")
        folds = args.folds if detector.startswith("cv") else 0  # an in-sample detector needs no folds
        result = train_clean(load_config(base=noisy_cfg), work, folds=folds, detector=detector, rule=rule,
                             truth=truth, variant=name, match_steps=match,
                             on_stage=lambda stage, text: log(f"  [{stage}] {text}"))
        fold_runs = [work / "noisy" / "cv" / f"fold-{k}" for k in range(folds)]
        record["variants"][name] = {
            "test_best": result.after["best"], "test_last": result.after["last"],
            "wrong_before": result.true_wrong_before, "wrong_after": result.true_wrong_after,
            "estimated_wrong_before": result.estimated_wrong_before,
            "estimated_wrong_after": result.estimated_wrong_after, "changed": result.changed_share,
            "dropped": result.dropped, "relabelled": result.relabelled, "judged": result.judged,
            "retrain_epochs": json.loads((result.clean_run / "summary.json").read_text())["epochs"],
            "train_s": training_seconds(work / "noisy") + sum(training_seconds(f) for f in fold_runs)
            + training_seconds(result.clean_run),
            "wall_s": wall_seconds(work / "noisy") + sum(wall_seconds(f) for f in fold_runs)
            + wall_seconds(result.clean_run)}
    record["detectors"] = detectors(work / "noisy", work / "bkd", truth)
    record["relabel_grid"] = relabel_grid(work / "noisy", truth)
    record["truth_noise"] = float(np.mean(samples_of(work / "noisy")["given_label"] != truth))
    return record


# --------------------------------------------------------------------------------------------------------
# Report

def stat(values) -> dict:
    values = [v for v in values if v is not None]
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def fmt(s: dict, scale: float = 100, digits: int = 2) -> str:
    if s["mean"] is None:
        return "-"
    text = f"{scale * s['mean']:.{digits}f}"
    return text + (f" ± {scale * s['std']:.{digits}f}" if s["std"] is not None else "")


def default_variant(names) -> str | None:
    """The variant that is train-clean's default (noisykd.pipeline's DEFAULT_RULE, DEFAULT_DETECTOR, DEFAULT_FOLDS
    and matched optimiser steps)."""
    wanted = "cv" if DEFAULT_FOLDS else DEFAULT_DETECTOR
    return next((n for n in names if VARIANTS[n][1] == DEFAULT_RULE and VARIANTS[n][2] == wanted and VARIANTS[n][3]),
                None)


def report(args, records: list[dict], command: str, loads: tuple, minutes: float | None = None) -> str:
    seeds = [r["seed"] for r in records]
    default = default_variant(args.variants)
    lines = [f"# The practitioner's pipeline against plain training: {args.data}", "",
             f"Command: `{command}`", "",
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()} "
             f"{_cpu()}, {os.cpu_count()} cores, torch threads {args.threads}; {minutes or 0:.0f} "
             f"min in all (reused runs not counted); load average at start {loads[0]}, at end {loads[1]}.", "",
             f"Data: {practitioner_data.__doc__.split('* ``' + args.data + '``: ')[1].split('* ``')[0].strip()} "
             f"True wrong-label share of the CE run's training samples: {fmt(stat([r['truth_noise'] for r in records]))}%. "
             f"Every run: noisykd's defaults, {args.epochs} epochs; {args.folds}-fold cross-validation; seeds "
             f"{seeds} (mean ± sample std).", "",
             "## Test accuracy", "",
             "| pipeline | test acc, best noisy-val epoch | test acc, last epoch | wrong labels after | labels changed "
             "| training s (all runs) | × CE |", "|---|---:|---:|---:|---:|---:|---:|"]
    ce_s = statistics.mean(r["ce"]["train_s"] for r in records)
    for key, label in (("ce", "CE on the labels as given"), ("bkd", "BKD on the labels as given")):
        lines.append(f"| {label} | {fmt(stat([r[key]['test_best'] for r in records]))} | "
                     f"{fmt(stat([r[key]['test_last'] for r in records]))} | "
                     f"{fmt(stat([r['truth_noise'] for r in records]))} | 0 | "
                     f"{fmt(stat([r[key]['train_s'] for r in records]), 1, 0)} | "
                     f"{statistics.mean(r[key]['train_s'] for r in records) / ce_s:.2f} |")
    for name in args.variants:
        v = [r["variants"][name] for r in records]
        mark = " **(train-clean's default)**" if name == default else ""
        lines.append(f"| train-clean: {VARIANTS[name][0]} ({name}){mark} | {fmt(stat([x['test_best'] for x in v]))} | "
                     f"{fmt(stat([x['test_last'] for x in v]))} | {fmt(stat([x['wrong_after'] for x in v]))} | "
                     f"{fmt(stat([x['changed'] for x in v]))} | {fmt(stat([x['train_s'] for x in v]), 1, 0)} | "
                     f"{statistics.mean(x['train_s'] for x in v) / ce_s:.2f} |")
    lines += ["", "Accuracies and shares in %. 'wrong labels after': the true share of wrong labels among the "
              "labelled samples kept (training and validation), after cleaning; 'labels changed': dropped or "
              "relabelled, of the labels judged. Training s: the engine's epoch times of every run the pipeline "
              "trains (noisy run, folds, retraining), this machine.", "",
              "## Wrong-label detection (CE's training samples)", "",
              "| detector | precision@100 | precision@300 | AUROC | AUPRC | F1 | precision | recall | flagged |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in DETECTORS:
        d = [r["detectors"][key] for r in records]
        cells = [fmt(stat([x[m] for x in d]), 1, 3) for m in ("p_at_100", "p_at_300", "auroc", "auprc", "f1",
                                                                 "precision", "recall")]
        lines.append(f"| {DETECTOR_LABELS[key]} | " + " | ".join(cells) + f" | {fmt(stat([x['n_flagged'] for x in d]), 1, 0)} |")
    lines += ["", f"cleanlab's own ranking (get_label_quality_scores) on the same cross-validated probabilities: "
              f"AUROC {fmt(stat([r['detectors']['cleanlab_cv_auroc'] for r in records]), 1, 3)}.", ""]
    lines += ["## Relabelling: how many, how many right (cross-validated probabilities, the cv suspects)", "",
              "| P(suggested) >= | P(given) <= | relabelled | right (the true class) | was right before "
              "(a new error) | wrong-label count change |", "|---:|---:|---:|---:|---:|---:|"]
    for key in records[0]["relabel_grid"]:
        g = [r["relabel_grid"][key] for r in records]
        lines.append(f"| {g[0]['relabel_min']:g} | {g[0]['given_max']:g} | {fmt(stat([x['n'] for x in g]), 1, 1)} | "
                     f"{fmt(stat([x['right'] for x in g]), 1, 1)} | {fmt(stat([x['was_right'] for x in g]), 1, 1)} | "
                     f"{fmt(stat([x['was_right'] - x['right'] for x in g]), 1, 1)} |")
    lines += ["", "Per seed, mean ± std: the suspects are the cv detector's flags; a relabel fixes a wrong label when "
              "the suggestion is the true class and makes a new error when the given label was right. Negative "
              "change: fewer wrong labels.", ""]
    lines += ["## Targets", ""] + targets(args, records)
    return "\n".join(lines) + "\n"


def targets(args, records) -> list[str]:
    out = []
    ce = stat([r["ce"]["test_best"] for r in records])
    name = default_variant(args.variants)
    if name is not None:
        default = stat([r["variants"][name]["test_best"] for r in records])
        gap = default["mean"] - ce["mean"]
        spread = max(s for s in (default["std"] or 0, ce["std"] or 0))
        held = gap > spread
        out.append(f"- The default train-clean pipeline ({name}) ends above CE in test accuracy (best noisy-val "
                   f"epoch, mean over seeds, gap larger than the std): **{'held' if held else 'not held'}** "
                   f"({100 * default['mean']:.2f} vs {100 * ce['mean']:.2f}, gap {100 * gap:+.2f}, larger std "
                   f"{100 * spread:.2f}).")
        ce_last = stat([r["ce"]["test_last"] for r in records])
        d_last = stat([r["variants"][name]["test_last"] for r in records])
        gap_last = d_last["mean"] - ce_last["mean"]
        spread_last = max(d_last["std"] or 0, ce_last["std"] or 0)
        out.append(f"- The same at the last epoch: **{'held' if gap_last > spread_last else 'not held'}** "
                   f"({100 * d_last['mean']:.2f} vs {100 * ce_last['mean']:.2f}, gap {100 * gap_last:+.2f}, larger "
                   f"std {100 * spread_last:.2f}).")
    for name in args.variants:
        rule = VARIANTS[name][1]
        if rule.action != "relabel":
            continue
        worse = [r["seed"] for r in records if r["variants"][name]["wrong_after"] > r["variants"][name]["wrong_before"]]
        out.append(f"- Relabelling never raises the wrong-label share ({name}): "
                   f"**{'held' if not worse else 'not held'}**" + (f" (raised in seeds {worse})" if worse else "")
                   + f"; {fmt(stat([r['variants'][name]['wrong_before'] for r in records]))}% -> "
                   f"{fmt(stat([r['variants'][name]['wrong_after'] for r in records]))}%.")
    default_auroc = stat([r["detectors"]["ce_own"]["auroc"] for r in records])
    cleanlab = stat([r["detectors"]["cleanlab_cv_auroc"] for r in records])
    out.append(f"- The default detector's AUROC (CE's own ranking: noisykd detect's and train-clean's default) at "
               f"least matches cleanlab with CV probabilities: "
               f"**{'held' if default_auroc['mean'] >= cleanlab['mean'] - 1e-9 else 'not held'}** "
               f"({default_auroc['mean']:.3f} vs {cleanlab['mean']:.3f}, cleanlab's get_label_quality_scores on the "
               f"{args.folds}-fold probabilities).")
    return out


def plot(args, records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["ce", "bkd"] + list(args.variants)
    labels = ["CE", "BKD"] + [f"train-clean\n{n}" for n in args.variants]

    def values(name, key):
        return [r[name][key] if name in ("ce", "bkd") else r["variants"][name][key] for r in records]

    fig, (ax_acc, ax_wrong) = plt.subplots(1, 2, figsize=(13, 4.5))
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "test_best", "best noisy-val epoch"), (0.2, "test_last", "last epoch")):
        means = [100 * np.mean(values(n, key)) for n in names]
        stds = [100 * np.std(values(n, key), ddof=1) if len(records) > 1 else 0 for n in names]
        ax_acc.bar(x + offset, means, 0.4, yerr=stds, label=label, capsize=3)
    ce_mean = 100 * np.mean(values("ce", "test_best"))
    ax_acc.axhline(ce_mean, color="grey", ls="--", lw=1)
    lo = min(100 * min(values(n, "test_last") + values(n, "test_best")) for n in names)
    ax_acc.set_ylim(lo - 3, None)
    ax_acc.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    ax_acc.set_ylabel("test accuracy (%)"), ax_acc.legend(fontsize=8), ax_acc.grid(axis="y", alpha=0.3)
    wrong = [100 * np.mean([r["truth_noise"] for r in records])] * 2 + \
        [100 * np.mean([r["variants"][n]["wrong_after"] for r in records]) for n in args.variants]
    ax_wrong.bar(x, wrong, 0.6, color="tab:red")
    ax_wrong.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    ax_wrong.set_ylabel("wrong labels in the training data (%)"), ax_wrong.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{args.data}: {args.epochs} epochs, seeds {[r['seed'] for r in records]} (mean ± std)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu() -> str:
    from noisykd.engine.report import cpu_model

    return cpu_model()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("fashion", "cifar10n"), required=True)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--cifar-root", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work", default="/tmp/noisykd-practitioner")
    parser.add_argument("--out", default=None)
    parser.add_argument("--report-only", action="store_true", help="rebuild OUT.md and OUT.png from OUT.json")
    args = parser.parse_args(argv)
    out = Path(args.out or f"benchmarks/results/practitioner-{args.data}")
    command = "python " + shlex.join(["benchmarks/practitioner.py", *(argv if argv is not None else sys.argv[1:])])
    started, load_start = time.time(), tuple(round(x, 2) for x in os.getloadavg())
    if args.report_only:
        saved = json.loads(out.with_suffix(".json").read_text())
        vars(args).update({k: v for k, v in saved["args"].items() if k not in ("report_only",)})
        text = report(args, saved["records"], saved["command"], tuple(saved.get("loads", ("-", "-"))),
                      minutes=saved.get("minutes"))
        out.with_suffix(".md").write_text(text)
        plot(args, saved["records"], out.with_suffix(".png"))
        print(text)
        return
    root = practitioner_data.export(args.data, Path(args.work) / "data" / args.data, Path(args.shared),
                                    Path(args.cifar_root) if args.cifar_root else None)
    truth_paths = practitioner_data.load_truth(root)
    records = []
    for seed in args.seeds:
        records.append(one_seed(args, root, seed, truth_paths))
        out.parent.mkdir(parents=True, exist_ok=True)
        loads = (load_start, tuple(round(x, 2) for x in os.getloadavg()))
        minutes = (time.time() - started) / 60
        text = report(args, records, command, loads, minutes=minutes)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"command": command, "args": vars(args), "records": records,
                                                        "loads": loads, "minutes": minutes,
                                                        "variants": {k: [v[0], v[1].__dict__, v[2], v[3]]
                                                                     for k, v in VARIANTS.items()}},
                                                       indent=1, default=str))
        plot(args, records, out.with_suffix(".png"))
        log(f"wrote {out}.md (seeds so far: {[r['seed'] for r in records]})")
    print(text)


if __name__ == "__main__":
    main()
