"""Wrong-label detection: BKD vs cleanlab (K-fold cross-validation) vs small loss / GMM, on identical labels.

Usage:
    python benchmarks/detection.py [--data digits] [--noise sym:0.4 | --labels SPEC] [--noise-seed 0]
                                   [--train-subset N] [--model small_cnn] [--epochs 40] [--lr 0.05]
                                   [--batch-size 64] [--augment none] [--folds 4] [--seeds 0 1 2]
                                   [--parts bkd ce cv] [--bkd-arg KEY=VALUE ...] [--threads 1]
                                   [--work-dir DIR] [--keep-runs] [--verbose]
                                   [--out benchmarks/results/detection-digits]

The noisy training labels are made once (``prepare_data``: fixed ``--noise-seed``, or a real label set with
``--labels``, then the optional stratified ``--train-subset``) and that one ``PreparedData`` object is handed
to every training run, so every detector judges exactly the same labels. Per training seed:

1. **BKD**: one run of method ``bkd`` (``split_source=eval_pass``, so that both per-epoch P_A histories exist).
   Detection scores are P_A(given label) at the fitting epoch e*, thresholded with Otsu's μ1 (the paper's
   rule, what the run itself flags), s and μ2. From the same run, the paired comparison that decides BKD's
   default ``split_source``: Otsu μ1 / s / μ2 on the TRAIN-PASS history (``p_agree_history[:, e*-1]``, P_A
   recorded during the training pass of e*: augmented views, train-mode BatchNorm, weights moving) vs the
   EVAL-PASS history (``p_agree_eval_history[:, e*-1]``, an eval-mode pass on un-augmented images after the
   epoch). Same run, same e*, same labels: only the source of the scores differs.
2. **cleanlab**: ``cleanlab.filter.find_label_issues(labels, pred_probs)`` (default ``filter_by``) on
   out-of-sample probabilities from K-fold cross-validation: ``StratifiedKFold(K, shuffle=True,
   random_state=seed)`` on the given labels, a CE model (method ``ce``, same network and schedule) trained on
   K-1 folds predicts softmax probabilities on the held-out fold (eval mode, un-augmented). Ranking metrics
   use ``cleanlab.rank.get_label_quality_scores`` (self-confidence). Also noisykd's own
   ``find_label_issues(method="otsu_mu1")`` on the same CV probabilities, as a cross-check.
3. **Loss-based** on a CE model trained on the full noisy set for the same epochs, final per-sample loss:
   the DivideMix GMM (clean probability < 0.5; what noisykd's CE runs flag), and the small-loss criterion
   flagging the r·N largest losses with r = the TRUE noise rate (an oracle) or r = the GMM's flagged fraction.

Cost: the wall time (and this process's CPU time) of each detector's training (BKD: one run; cleanlab: K CE
runs plus their held-out predictions; loss-based: one CE run), measured in the same process. Every run trains
without a test split (no per-epoch test evaluation), so the times are the training (+ BKD's eval pass, the
per-epoch checkpoint and the end-of-run reports) only. torch uses 1 thread by default (``--threads``): on a
shared 2-core machine torch's default of one thread per core slows down 10-25x as soon as another job runs.
``--parts`` runs only some of the trainings (e.g. ``--parts bkd --seeds 0 1 2 3 4 5 6 7 8 9`` for the paired
train-pass / eval-pass comparison alone).

Outputs: a Markdown table on stdout (detector rows x metric columns, mean ± std over seeds), and ``--out`` +
``.json`` (per-seed raw metrics, timings, fitting epochs and fallbacks, the resolved run configs, noise rate,
versions, date, the exact command) and ``.md`` (the tables and the command). Run folders go to a temporary
directory outside the repository (deleted at the end unless ``--keep-runs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from noisykd.config import DataConfig, load_config
from noisykd.detect import detection_metrics, find_label_issues
from noisykd.engine import Trainer
from noisykd.logs import log_to_stderr
from noisykd.engine.setup import PreparedData, prepare_data
from noisykd.errors import NoisyKDError

METRICS = ("f1", "precision", "recall", "auroc", "auprc", "n_flagged")

# Detector rows, in table order: key -> (label, which training it needs).
DETECTORS = {
    "bkd_eval_mu1": ("BKD P_A eval pass, Otsu μ1 (paper rule; the run's own flags)", "bkd"),
    "bkd_eval_s": ("BKD P_A eval pass, Otsu s", "bkd"),
    "bkd_eval_mu2": ("BKD P_A eval pass, Otsu μ2", "bkd"),
    "bkd_train_mu1": ("BKD P_A train pass, Otsu μ1", "bkd"),
    "bkd_train_s": ("BKD P_A train pass, Otsu s", "bkd"),
    "bkd_train_mu2": ("BKD P_A train pass, Otsu μ2", "bkd"),
    "cleanlab": ("cleanlab find_label_issues, K-fold CV probs (ranking: self-confidence)", "cv"),
    "cv_otsu_mu1": ("noisykd Otsu μ1 on the same K-fold CV probs", "cv"),
    "ce_gmm": ("GMM on CE final loss (DivideMix; noisykd CE runs' flags)", "ce"),
    "ce_small_loss_oracle": ("small loss, r = true noise rate (ORACLE)", "ce"),
    "ce_small_loss_gmm_rate": ("small loss, r = GMM's flagged fraction", "ce"),
}
PARTS = ("bkd", "ce", "cv")
COST_LABEL = {"bkd": "BKD: 1 run (teacher + student)", "cv": "cleanlab: K CE runs + held-out prediction",
              "ce": "loss-based: 1 CE run"}


def log(msg: str) -> None:
    print(f"[detection {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------

def parse_bkd_args(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> method_args (values parsed as YAML scalars: ints, floats, booleans)."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --bkd-arg expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def base_config(args, method: str, seed: int, out_dir: Path, method_args: dict | None = None) -> dict:
    """The run config shared by every training (only method, method_args, seed and out_dir differ): the shipped
    ``digits/sym40`` config with this benchmark's options. The data section documents where the labels came
    from; the PreparedData passed to the Trainer is what is used."""
    return load_config("digits/sym40", updates={
        "method": method, "method_args": method_args or {}, "seed": seed, "device": args.device,
        "out_dir": str(out_dir),
        "data": {**data_section(args), "val_fraction": 0.0},
        "model": {"name": args.model},
        "optim": {"lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size, "schedule": "cosine",
                  "weight_decay": args.weight_decay},
        "augment": {"policy": args.augment},
    }).to_dict()


def data_section(args) -> dict:
    return {"spec": args.data, "labels": args.labels, "noise": args.noise, "noise_seed": args.noise_seed,
            "train_subset": args.train_subset}


def label_digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------------------

def run_training(cfg_dict: dict, data: PreparedData, verbose: bool) -> tuple[Trainer, object, float, float]:
    """Train one run on ``data``; returns the trainer (networks still loaded), the RunResult, its wall time and
    the CPU time of this process during it (all threads)."""
    cfg = load_config(base=cfg_dict)
    if verbose:
        log_to_stderr()
    trainer = Trainer(cfg, data=data, progress=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = trainer.run()
    return trainer, result, time.perf_counter() - start, time.process_time() - cpu_start


def load_samples(out_dir: Path) -> dict[str, np.ndarray]:
    with np.load(out_dir / "samples.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def check_same_labels(samples: dict, rows: np.ndarray, given: np.ndarray, what: str) -> None:
    if not np.array_equal(samples["given_label"][rows], given):
        raise RuntimeError(f"{what}: the run trained on other labels than the benchmark's; this is a bug")


def bkd_detectors(args, seed: int, data: PreparedData, truth: np.ndarray, given: np.ndarray, work: Path) -> dict:
    rows = data.train.indices
    method_args = {"split_source": "eval_pass", **args.bkd_args}
    if method_args["split_source"] != "eval_pass":
        raise SystemExit("error: --bkd-arg split_source must stay eval_pass (both histories are needed)")
    cfg = base_config(args, "bkd", seed, work / f"bkd-s{seed}", method_args)
    log(f"seed {seed}: BKD, {args.epochs} epochs on {len(rows)} samples ...")
    _, result, seconds, cpu = run_training(cfg, data, args.verbose)
    split = result.summary["method_summary"]["split"]
    if split is None:
        raise RuntimeError(f"BKD (seed {seed}) never split (no fitting epoch within {args.epochs} epochs); "
                           "use more epochs or --bkd-arg tipping_deadline=N")
    samples = load_samples(result.out_dir)
    check_same_labels(samples, rows, given, f"BKD seed {seed}")
    e = split["fitting_epoch"] - 1   # 0-based column of the fitting epoch
    scores = {"eval": samples["p_agree_eval_history"][rows, e].astype(np.float64),
              "train": samples["p_agree_history"][rows, e].astype(np.float64)}
    metrics, otsu = {}, {}
    for source, score in scores.items():
        if np.isnan(score).any():
            raise RuntimeError(f"BKD seed {seed}: NaN in the {source}-pass P_A at epoch {e + 1}")
        for rule in ("mu1", "s", "mu2"):
            issues = find_label_issues(given, scores=np.clip(score, 0, 1), method=f"otsu_{rule}", seed=seed)
            metrics[f"bkd_{source}_{rule}"] = detection_metrics(truth, issues.is_label_issue, issues.noise_score)
            otsu[source] = {k: issues.thresholds[k] for k in ("s", "mu1", "mu2", "n1", "n2")}
    # consistency: the eval-pass μ1 recomputed here is what the run itself flagged
    run_flags = samples["flagged"][rows] == 1
    recomputed = metrics["bkd_eval_mu1"]
    consistent = int(run_flags.sum()) == recomputed["n_flagged"] and \
        int((run_flags & truth).sum()) == recomputed["tp"]
    if not consistent:
        log(f"WARNING seed {seed}: the run's own flags ({int(run_flags.sum())}) differ from the recomputed "
            f"eval-pass μ1 flags ({recomputed['n_flagged']})")
    info = {"seconds": seconds, "cpu_seconds": cpu, "fitting_epoch": split["fitting_epoch"],
            "detected_after_epoch": split["detected_after_epoch"], "fallback": split["fallback"],
            "run_split": {k: split[k] for k in ("s", "mu1", "mu2", "group_sizes", "split_source")},
            "otsu": otsu, "run_flags_match_recomputed_eval_mu1": consistent,
            "run_detection": result.summary["detection"],
            "train_fit_wrong_labels_last": result.history[-1].get("train_fit_wrong_labels"),
            "mean_max_p_student": result.summary["method_summary"]["mean_max_p_student"],
            "config": cfg}
    log(f"seed {seed}: BKD done in {seconds:.1f} s; fitting epoch {split['fitting_epoch']} "
        f"(known after epoch {split['detected_after_epoch']}, fallback={split['fallback']}); "
        f"μ1 F1 eval pass {metrics['bkd_eval_mu1']['f1']:.4f} vs train pass {metrics['bkd_train_mu1']['f1']:.4f}")
    return {"metrics": metrics, "info": info}


def ce_detectors(args, seed: int, data: PreparedData, truth: np.ndarray, given: np.ndarray, work: Path) -> dict:
    rows = data.train.indices
    cfg = base_config(args, "ce", seed, work / f"ce-s{seed}")
    log(f"seed {seed}: CE on the full noisy set, {args.epochs} epochs ...")
    _, result, seconds, cpu = run_training(cfg, data, args.verbose)
    samples = load_samples(result.out_dir)
    check_same_labels(samples, rows, given, f"CE seed {seed}")
    p_given = np.clip(samples["p_given"][rows].astype(np.float64), 0, 1)
    loss = samples["loss"][rows].astype(np.float64)
    gmm = find_label_issues(given, scores=p_given, method="gmm", seed=seed)
    metrics = {"ce_gmm": detection_metrics(truth, gmm.is_label_issue, gmm.noise_score)}
    true_rate = float(truth.mean())
    gmm_rate = float(gmm.is_label_issue.mean())
    for key, rate in (("ce_small_loss_oracle", true_rate), ("ce_small_loss_gmm_rate", gmm_rate)):
        issues = find_label_issues(given, scores=p_given, method="small_loss", noise_rate=rate)
        # rank by the loss itself (same order as 1 - p_given, without float32 ties of p_given near 1)
        metrics[key] = detection_metrics(truth, issues.is_label_issue, loss)
    run_flags = samples["flagged"][rows] == 1
    info = {"seconds": seconds, "cpu_seconds": cpu, "true_noise_rate": true_rate, "gmm_flagged_fraction": gmm_rate,
            "run_flags_match_recomputed_gmm": bool(np.array_equal(run_flags, gmm.is_label_issue)),
            "train_fit_wrong_labels_last": result.history[-1].get("train_fit_wrong_labels"), "config": cfg}
    log(f"seed {seed}: CE done in {seconds:.1f} s; GMM F1 {metrics['ce_gmm']['f1']:.4f}, "
        f"small-loss (oracle r={true_rate:.3f}) F1 {metrics['ce_small_loss_oracle']['f1']:.4f}; "
        f"wrong labels fitted at the end: {info['train_fit_wrong_labels_last']}")
    return {"metrics": metrics, "info": info}


def cv_detectors(args, seed: int, data: PreparedData, truth: np.ndarray, given: np.ndarray, work: Path) -> dict:
    from cleanlab.filter import find_label_issues as cl_find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    n, c = len(given), data.num_classes
    pred_probs = np.full((n, c), np.nan)
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=seed)
    fold_info, total, total_cpu = [], 0.0, 0.0
    for k, (fit_pos, held_pos) in enumerate(folds.split(np.zeros(n), given)):
        cfg = base_config(args, "ce", seed, work / f"cv-s{seed}-f{k}")
        fold_data = dataclasses.replace(data, train=data.train.subset(fit_pos), val=None, test=None)
        log(f"seed {seed}: CV fold {k + 1}/{args.folds}: CE on {len(fit_pos)}, predicting {len(held_pos)} ...")
        trainer, result, seconds, cpu = run_training(cfg, fold_data, args.verbose)
        start, cpu_start = time.perf_counter(), time.process_time()
        logits = trainer.predict_split(data.train.subset(held_pos))["main"]
        pred_probs[held_pos] = torch.softmax(logits.double(), dim=1).numpy()
        predict_seconds = time.perf_counter() - start
        total += seconds + predict_seconds
        total_cpu += cpu + time.process_time() - cpu_start
        fold_info.append({"fold": k, "train_samples": len(fit_pos), "held_out": len(held_pos),
                          "train_seconds": seconds, "predict_seconds": predict_seconds,
                          "held_out_acc_given": float((pred_probs[held_pos].argmax(1) == given[held_pos]).mean())})
        del trainer
    if np.isnan(pred_probs).any():
        raise RuntimeError("cross-validation left samples without a held-out prediction; this is a bug")
    start = time.perf_counter()
    cl_flags = cl_find_label_issues(given, pred_probs, n_jobs=1)
    quality = get_label_quality_scores(given, pred_probs)
    cleanlab_seconds = time.perf_counter() - start
    metrics = {"cleanlab": detection_metrics(truth, np.asarray(cl_flags, dtype=bool), 1.0 - quality)}
    ours = find_label_issues(given, pred_probs, method="otsu_mu1")
    metrics["cv_otsu_mu1"] = detection_metrics(truth, ours.is_label_issue, ours.noise_score)
    info = {"seconds": total, "cpu_seconds": total_cpu, "folds": fold_info, "cleanlab_seconds": cleanlab_seconds,
            "oos_acc_given": float((pred_probs.argmax(1) == given).mean()),
            "config": base_config(args, "ce", seed, work / f"cv-s{seed}-f<k>")}
    log(f"seed {seed}: CV done in {total:.1f} s (+{cleanlab_seconds:.2f} s cleanlab); cleanlab F1 "
        f"{metrics['cleanlab']['f1']:.4f}, AUROC {metrics['cleanlab']['auroc']:.4f}")
    return {"metrics": metrics, "info": info}


# --------------------------------------------------------------------------------------------------------
# Aggregation and output
# --------------------------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(per_seed: list[dict]) -> dict:
    out = {}
    for key in DETECTORS:
        rows = [s["metrics"][key] for s in per_seed if key in s["metrics"]]
        if rows:
            out[key] = {m: dict(zip(("mean", "std"), mean_std([r[m] for r in rows]))) for m in METRICS}
    cost, cpu = {}, {}
    for part in ("bkd", "cv", "ce"):
        secs = [s["info"][part]["seconds"] for s in per_seed if part in s["info"]]
        if secs:
            cost[part] = dict(zip(("mean", "std"), mean_std(secs)))
            cpu[part] = dict(zip(("mean", "std"), mean_std([s["info"][part]["cpu_seconds"] for s in per_seed])))
    out["_cost_seconds"] = cost
    out["_cost_cpu_seconds"] = cpu
    return out


def paired(per_seed: list[dict]) -> dict:
    """Eval pass minus train pass, per seed, for each Otsu rule and the ranking metrics."""
    out = {}
    for rule in ("mu1", "s", "mu2"):
        for metric in ("f1", "precision", "recall", "auroc", "auprc"):
            diffs = [s["metrics"][f"bkd_eval_{rule}"][metric] - s["metrics"][f"bkd_train_{rule}"][metric]
                     for s in per_seed]
            m, sd = mean_std(diffs)
            out[f"{rule}_{metric}"] = {"eval_minus_train": diffs, "mean": m, "std": sd,
                                       "eval_wins": sum(d > 0 for d in diffs), "train_wins": sum(d < 0 for d in diffs),
                                       "ties": sum(d == 0 for d in diffs)}
    return out


NOTES = (
    "Notes: F1 / precision / recall of the flagged set against the true wrong labels (BKD Eq. 10-12); AUROC / "
    "AUPRC of the detector's continuous score (BKD: 1 - P_A of the given label at the fitting epoch; "
    "cleanlab: 1 - self-confidence of the CV probabilities; loss-based: the CE model's final loss). The "
    "small-loss row with r = true noise rate uses the ground truth to choose how many to flag: an oracle, "
    "not a usable detector. Every run trains without a test split. Raw per-seed numbers, timings and "
    "configs: the `.json` file next to this one.")


def fmt(ms: dict, metric: str, n_seeds: int) -> str:
    """``mean ± std``; only the value for a single seed."""
    if ms["mean"] != ms["mean"]:
        return "n/a"
    digits = 0 if metric in ("n_flagged", "seconds") else 1 if metric == "seconds1" else 4
    value = f"{ms['mean']:.{digits}f}"
    return value if n_seeds == 1 else f"{value} ± {ms['std']:.{digits}f}"


def markdown(result: dict) -> str:
    cfg, agg, per_seed = result["config"], result["aggregate"], result["per_seed"]
    env = result["environment"]
    seeds = cfg["seeds"]
    labels = cfg["labels"] or f"{cfg['noise']} (noise_seed {cfg['noise_seed']})"
    spread = f"mean ± sample std over {len(seeds)} seeds" if len(seeds) > 1 else "one seed: no spread"
    subset = f" (stratified subset of {cfg['train_subset']:,})" if cfg.get("train_subset") else ""
    lines = [
        f"# Wrong-label detection: {cfg['data_name']}, {labels}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{result['date']}; {env['cpu_model']}, {env['cpu_count']} cores, torch {env['torch']} "
        f"({env['torch_threads']} threads), cleanlab {env['cleanlab']}, scikit-learn {env['sklearn']}; "
        f"{result['total_wall_seconds'] / 60:.1f} min in all.",
        "",
        f"{cfg['train_samples']:,} training samples{subset}, {cfg['num_classes']} classes, true noise rate "
        f"{cfg['noise_rate']:.4f} ({cfg['n_noisy']:,} wrong labels); the same labels for every detector "
        f"(sha256 {cfg['labels_digest']}). Network `{cfg['model']}`, {cfg['epochs']} epochs, SGD lr {cfg['lr']} "
        f"cosine, batch {cfg['batch_size']}, weight decay {cfg['weight_decay']}, augmentation `{cfg['augment']}`; "
        f"{cfg['folds']}-fold CV for cleanlab; trainings run: {', '.join(cfg['parts'])}; training seeds "
        f"{' '.join(map(str, seeds))} ({spread}). BKD method_args: `{json.dumps(cfg['bkd_method_args'])}`.",
        "",
        "| detector | F1 | precision | recall | AUROC | AUPRC | n flagged | training wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cost, cpu = agg["_cost_seconds"], agg["_cost_cpu_seconds"]
    n = len(seeds)
    for key, (label, part) in DETECTORS.items():
        if key not in agg:
            continue
        cells = [fmt(agg[key][m], m, n) for m in METRICS] + [fmt(cost[part], "seconds1", n)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Training cost per seed (this machine, one process; CPU s = this process's CPU time, all "
              "threads):", "",
              "| training | wall s (mean ± std) | wall s per seed | CPU s (mean ± std) |", "|---|---:|---|---:|"]
    for part, c in cost.items():
        each = ", ".join(f"{s['info'][part]['seconds']:.1f}" for s in per_seed)
        lines.append(f"| {COST_LABEL[part]} | {fmt(c, 'seconds1', n)} | {each} | {fmt(cpu[part], 'seconds1', n)} |")
    ratios = []
    for a, b, what in (("cv", "bkd", "one BKD run"), ("cv", "ce", "one full CE run"), ("bkd", "ce", None)):
        if a in cost and b in cost:
            text = (f"K-fold CV ({cfg['folds']} CE runs) costs {cost[a]['mean'] / cost[b]['mean']:.2f}x {what}"
                    if what else f"one BKD run costs {cost[a]['mean'] / cost[b]['mean']:.2f}x one full CE run")
            ratios.append(text + f" (wall; CPU time {cpu[a]['mean'] / cpu[b]['mean']:.2f}x)")
    if ratios:
        lines += ["", "; ".join(ratios) + ". Ratios of the means over seeds.",]
    load = env.get("load_average_at_start"), env.get("load_average_at_end")
    if load[0] and load[1]:
        lines += ["", f"Load average (1, 5, 15 min) at start {', '.join(f'{v:.2f}' for v in load[0])}, at end "
                  f"{', '.join(f'{v:.2f}' for v in load[1])}, on {env['cpu_count']} cores with this benchmark "
                  f"using {env['torch_threads']} torch thread(s): a load well above that means other work "
                  "shared the CPU, and the absolute times are inflated (the ratios less so)."]
    if "bkd_eval_mu1" not in agg:
        return "\n".join(lines + ["", NOTES]) + "\n"
    lines += ["", "BKD fitting epoch per seed (1-based; fallback = no strict maximum found by the deadline, "
              "arg-max taken):", ""]
    lines.append("| seed | fitting epoch | known after epoch | fallback | eval-pass s / μ1 / μ2 | "
                 "train-pass s / μ1 / μ2 |")
    lines.append("|---|---:|---:|---|---|---|")
    for seed, s in zip(seeds, per_seed):
        b = s["info"]["bkd"]
        o = b["otsu"]
        lines.append(f"| {seed} | {b['fitting_epoch']} | {b['detected_after_epoch']} | {b['fallback']} | "
                     f"{o['eval']['s']:.3f} / {o['eval']['mu1']:.3f} / {o['eval']['mu2']:.3f} | "
                     f"{o['train']['s']:.3f} / {o['train']['mu1']:.3f} / {o['train']['mu2']:.3f} |")
    p = result["paired_eval_minus_train"]
    lines += ["", "Paired comparison for BKD's `split_source` (same run, same fitting epoch; eval pass minus "
              "train pass, per seed):", "",
              "| rule | ΔF1 mean ± std | per seed | eval wins / train wins / ties | ΔAUROC mean ± std |",
              "|---|---:|---|---|---:|"]
    detected = [s for s in per_seed if not s["info"]["bkd"]["fallback"]]
    subsets = [("", p, n)]
    if 0 < len(detected) < n:
        subsets.append((f" (only the {len(detected)} seed(s) with a detected tipping point)", paired(detected),
                        len(detected)))
    for suffix, q, count in subsets:
        sd = lambda x: "" if count == 1 else f" ± {x['std']:.4f}"
        for rule in ("mu1", "s", "mu2"):
            d, a = q[f"{rule}_f1"], q[f"{rule}_auroc"]
            each = ", ".join(f"{v:+.4f}" for v in d["eval_minus_train"])
            lines.append(f"| Otsu {'μ1' if rule == 'mu1' else 'μ2' if rule == 'mu2' else 's'}{suffix} | "
                         f"{d['mean']:+.4f}{sd(d)} | {each} | {d['eval_wins']} / {d['train_wins']} / {d['ties']} | "
                         f"{a['mean']:+.4f}{sd(a)} |")
    fell_back = [seed for seed, s in zip(seeds, per_seed) if s["info"]["bkd"]["fallback"]]
    if fell_back:
        lines += ["", f"{len(fell_back)} of {n} seed(s) ({', '.join(map(str, fell_back))}) found no tipping point "
                  "by the deadline (BKD's `tipping_deadline`, default half the epochs): their fitting epoch is the "
                  "arg-max of the mean max P_S series so far, a fallback, not a detected tipping point."]
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import cleanlab
    import sklearn

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"torch": torch.__version__, "cleanlab": cleanlab.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "cpu_model": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="data spec (digits, cifar10:ROOT, ...)")
    parser.add_argument("--noise", default=None, help="synthetic noise (default sym:0.4 unless --labels)")
    parser.add_argument("--labels", default=None, help="real label set, e.g. cifar10n:FILE:worst")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the synthetic noise (fixed: 0)")
    parser.add_argument("--train-subset", type=int, default=None, help="stratified subset of the training set")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--augment", default=None, help="augmentation policy (default: none for digits, "
                                                        "weak otherwise)")
    parser.add_argument("--folds", type=int, default=4, help="K of the cross-validation for cleanlab")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="trainings to run (default all): bkd, ce (loss-based detectors), cv (cleanlab)")
    parser.add_argument("--bkd-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="extra BKD method_args (repeatable), e.g. tipping_deadline=20")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: on a shared 2-core machine torch's default of all "
                             "cores oversubscribes the CPU as soon as anything else runs; 0 keeps torch's default)")
    parser.add_argument("--work-dir", default=None, help="where the run folders go (default: a new temp dir)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders")
    parser.add_argument("--verbose", action="store_true", help="print every training epoch")
    parser.add_argument("--out", default="benchmarks/results/detection-digits", help="output prefix (.json, .md)")
    args = parser.parse_args(argv)

    if args.labels and args.noise not in (None, "none"):
        parser.error("--labels and --noise both given: use a real label set or synthetic noise, not both")
    args.noise = "none" if args.labels else (args.noise or "sym:0.4")
    if args.augment is None:
        args.augment = "none" if args.data == "digits" else "weak"
    if args.folds < 2:
        parser.error("--folds must be >= 2")
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    args.bkd_args = parse_bkd_args(args.bkd_arg)
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise SystemExit("error: cleanlab is not installed (python -m pip install 'cleanlab>=2.5')")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + shlex.join([sys.argv[0]] + (sys.argv[1:] if argv is None else list(argv)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    repo = Path(__file__).resolve().parent.parent
    if args.work_dir and Path(args.work_dir).resolve().is_relative_to(repo):
        parser.error(f"--work-dir {args.work_dir} is inside the repository; choose a folder outside it")
    wall_start = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    # the labels: made once, the same object for every run
    data_cfg = DataConfig(spec=args.data, labels=args.labels, noise=args.noise, noise_seed=args.noise_seed,
                          train_subset=args.train_subset)
    data_cfg.validate()
    log(f"loading {args.data} with labels {args.labels or args.noise} ...")
    try:
        data = prepare_data(data_cfg)
    except NoisyKDError as exc:
        raise SystemExit(f"error: could not prepare the data: {exc}")
    data = dataclasses.replace(data, val=None, test=None)  # no per-epoch test evaluation: training cost only
    if data.clean_labels is None:
        raise SystemExit("error: the labels have no ground truth (clean labels): detection cannot be scored")
    rows = data.train.indices
    given = data.train.labels.copy()
    if not np.array_equal(given, data.noisy.labels[rows]):
        raise RuntimeError("training split labels differ from the noisy labels; this is a bug")
    truth = data.noisy.is_noisy[rows].astype(bool)
    counts = np.bincount(given, minlength=data.num_classes)
    if counts.min() < args.folds:
        raise SystemExit(f"error: a class has only {counts.min()} samples, fewer than --folds {args.folds}")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="noisykd-detection-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"run folders in {work}")
    data.noisy.save(work / "noisy_labels.npz")
    log(f"{len(rows)} training samples, {data.num_classes} classes, noise rate {truth.mean():.4f} "
        f"({int(truth.sum())} wrong labels), labels sha256 {label_digest(given)}")

    per_seed = []
    try:
        for seed in args.seeds:
            entry = {"seed": seed, "metrics": {}, "info": {}}
            for part, fn in (("bkd", bkd_detectors), ("ce", ce_detectors), ("cv", cv_detectors)):
                if part not in args.parts:
                    continue
                res = fn(args, seed, data, truth, given, work)
                entry["metrics"].update(res["metrics"])
                entry["info"][part] = res["info"]
            per_seed.append(entry)
            log(f"seed {seed} done; {time.perf_counter() - wall_start:.0f} s elapsed")
    except (NoisyKDError, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}")
    finally:
        if not args.keep_runs:
            shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "detection",
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "total_wall_seconds": time.perf_counter() - wall_start,
        "environment": environment(),
        "config": {
            "data": args.data, "data_name": data.dataset.name, "labels": args.labels, "noise": args.noise,
            "noise_seed": args.noise_seed, "train_subset": args.train_subset, "train_samples": int(len(rows)),
            "num_classes": data.num_classes, "noise_rate": float(truth.mean()), "n_noisy": int(truth.sum()),
            "labels_digest": label_digest(given), "noise_summary": data.noisy.summary(),
            "model": args.model, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "weight_decay": args.weight_decay, "schedule": "cosine", "augment": args.augment,
            "folds": args.folds, "seeds": args.seeds, "parts": args.parts, "device": args.device,
            "bkd_method_args": {"split_source": "eval_pass", **args.bkd_args},
            "work_dir": str(work) if args.keep_runs else None,
        },
        "detectors": {k: v[0] for k, v in DETECTORS.items()},
        "aggregate": aggregate(per_seed),
        "paired_eval_minus_train": paired(per_seed) if "bkd" in args.parts else None,
        "paired_eval_minus_train_detected_only": (
            paired([s for s in per_seed if not s["info"]["bkd"]["fallback"]])
            if "bkd" in args.parts and any(not s["info"]["bkd"]["fallback"] for s in per_seed) else None),
        "per_seed": per_seed,
    }
    result["environment"]["load_average_at_start"] = load_start
    result["environment"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = jsonable(result)
    text = markdown(result)
    print(text)
    out.with_name(out.name + ".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_name(out.name + ".md").write_text(text)
    log(f"wrote {out}.json and {out}.md in {result['total_wall_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
