"""Any registered methods on noisy labels, side by side: test accuracy (last, best noisy-val, best oracle) and
wrong-label detection (F1 / precision / recall / AUROC), mean ± std over seeds. Began as BKD vs CE; every method
is compared here (one script, one table format).

    python benchmarks/bkd_vs_ce.py --preset digits                                   # ce, bkd, bkd_ref
    python benchmarks/bkd_vs_ce.py --preset digits --methods ce proselflc mconf \
        syncmkd=cmd:knowledge=all cmd_s=cmd:knowledge=static cmd_p=cmd cmd_p_mconf=cmd:self_kd=mconf
    python benchmarks/bkd_vs_ce.py --preset cifar10n --cifar-root /tmp/c10 \
        --cifar-n ../shared/data/cifar-n/CIFAR-10_human.pt --label-sets worst aggre

A method spec is ``METHOD``, ``METHOD:KEY=VALUE,...`` (its ``method_args``) or ``LABEL=METHOD:KEY=VALUE,...``;
``--methods cmd-grid`` stands for CMD's Table 1 grid at CPU scale (see ``GRIDS``).

Presets (shipped configs, every value with its source):
  digits    configs/digits/sym40.yaml: 8x8 digits, 40% symmetric noise (noise seed 0), small_cnn, 60 epochs,
            cosine lr 0.05, no augmentation (the demo's settings).
  cifar10-sym40  configs/ce/cifar100-sym40.yaml (CMD's Table 3 setting: ResNet-34, lr 0.1 /10 at 50% and 80%,
            40% symmetric noise, weak augmentation) on CIFAR-10 (--train-subset 0 for all of it): CMD's GPU run.
  cifar10-noisy  configs/nrd/cifar10-subset-cpu.yaml (NRD Table 2 at CPU scale): a 5,000-image CIFAR-10 subset,
            the label sets are noise specs (default sym-all:0.4 sym-all:0.8), small_cnn, 30 epochs, RandAugment +
            Cutout for every method; each method of NRD Table 5 gets its lr, weight decay and loss hyperparameters
            for the noise level (apply_table5).
  cifar10n  configs/cifar10n/small-cnn-subset.yaml: a stratified 10,000-image subset of CIFAR-10 (10% of it held
            out as noisy validation) with the CIFAR-10N human labels, small_cnn, SGD lr 0.02 momentum 0.9 wd 5e-4,
            batch 128, lr x0.1 at half the epochs (the paper's schedule, shortened), weak augmentation with
            reflect padding (BKD's).
  digits-openset  configs/modul/digits-openset.yaml (MODUL Table I at CPU scale): 8x8 digits with universal
            noise, Fashion-MNIST images (--ood) as the open-set ones, label sets openset:RHO1:RHO2 (default 0.5:0.5
            and 0.75:0.75); the distillation methods (vkd, dfnd, modul) get the teacher of
            configs/modul/digits-teacher.yaml, trained once per invocation (or --teacher RUN):
    python benchmarks/bkd_vs_ce.py --preset digits-openset --methods ce vkd dfnd modul
  cifar10-openset  configs/modul/cifar10-subset-cpu.yaml: the same on a 5,000-image CIFAR-10 subset (weak
            augmentation, 30 epochs), Tiny ImageNet (--ood, the tarball) as the open-set images, the teacher of
            configs/modul/cifar10-teacher-cpu.yaml (10,000 clean images).
Every run of a seed uses the same noisy labels for every method; the training seed differs per seed.
Run folders go to a temporary directory; results (JSON + Markdown with this command) to --out.

Long grids can run as several processes (one per core, or one per method and seed) and be joined afterwards:
    python benchmarks/bkd_vs_ce.py --merge PART1.json PART2.json ... --out RESULTS
(same preset, epochs, network, augmentation and label sets; a method's seeds may come from several parts, each
seed once; the Markdown lists every part's command.)
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from noisykd.config import apply_overrides, load_config, read_config_file
from noisykd.reproduce import SeedRun, Setting, fmt, parse_method_spec, run_seeds
from noisykd.reproduce import mean_std as summary_mean_std
from speed import cpu_model  # the CPU's model name (benchmarks/speed.py): float results depend on its kernels

#: short names for method specs (any spec works: ``gce:q=0.5``, ``label=method:key=value,...``)
ALIASES = {"bkd_ref": "bkd_ref=bkd:reference_gradients=true"}  # BKD with the authors' code's gradients

#: named lists of specs for --methods. cmd-grid: the CMD paper's Table 1 at CPU scale, its claims' rows: CE, the
#: two self label corrections alone, then two models with ProSelfLC exchanging zero / all (SyncMKD) / static
#: (CMD-S) / progressive (CMD-P) knowledge, and CMD-P with Mconf.
GRIDS = {"cmd-grid": ["ce", "proselflc", "mconf", "zero=cmd:knowledge=zero", "syncmkd=cmd:knowledge=all",
                      "cmd_s=cmd:knowledge=static", "cmd_p=cmd:knowledge=progressive",
                      "cmd_p_mconf=cmd:self_kd=mconf,knowledge=progressive"]}


def preset_config(args, spec: str, label_set: str | None, out_dir: Path) -> dict:
    """The resolved config (plain data) of one method spec on one label set of the preset."""
    _, method, method_args = parse_method_spec(ALIASES.get(spec, spec))
    method_args = dict(method_args)
    if distils(method) and "teacher" not in method_args:
        method_args["teacher"] = str(preset_teacher(args, out_dir))
    cfg = _preset(args, method, label_set, out_dir, method_args)
    cfg["method_args"] = method_args
    if args.preset == "cifar10-noisy":
        apply_table5(cfg, method, label_set)
    if getattr(args, "augment", None) is not None:
        cfg["augment"] = {"policy": "none"} if args.augment == "none" else {**cfg["augment"], "policy": args.augment}
    if getattr(args, "model", None) is not None:
        cfg["model"] = {"name": args.model}
    apply_overrides(cfg, getattr(args, "set", None) or [])
    return load_config(base=cfg).to_dict()


#: benchmark preset -> the shipped config it starts from (configs/, each value with its source)
PRESET_CONFIGS = {"digits": "digits/sym40", "cifar10n": "cifar10n/small-cnn-subset",
                  # CMD's CIFAR-100 setting (ResNet-34, lr 0.1 /10 at 50% and 80%, 40% symmetric noise, A.2), on
                  # CIFAR-10: the CMD GPU check (no CIFAR-100 images in ../shared/data)
                  "cifar10-sym40": "ce/cifar100-sym40",
                  # NRD Table 2 at CPU scale: 5,000 CIFAR-10 images, synthetic noise, every method on GJS's views
                  "cifar10-noisy": "nrd/cifar10-subset-cpu",
                  # MODUL Table I at CPU scale: digits with universal noise, Fashion-MNIST as the open-set images
                  "digits-openset": "modul/digits-openset",
                  # the same on a 5,000-image CIFAR-10 subset, Tiny ImageNet as the open-set images
                  "cifar10-openset": "modul/cifar10-subset-cpu"}

#: the teacher config of a distillation preset (trained once per invocation, shared by every method and seed)
TEACHER_CONFIGS = {"digits-openset": "modul/digits-teacher", "cifar10-openset": "modul/cifar10-teacher-cpu"}
#: the out-of-distribution pool of a universal-noise preset: its data kind and the default path (--ood)
OOD_POOLS = {"digits-openset": ("fashion-mnist", "../shared/data/fashion-mnist"),
             "cifar10-openset": ("tinyimagenet", "../shared/data/tinyimagenet/tinyimagenet-val-test-jpeg.tar.gz")}


def distils(method: str) -> bool:
    """Whether a method distils a trained teacher (its arguments have a ``teacher`` field: vkd, dfnd, modul)."""
    import dataclasses

    from noisykd.methods import METHODS

    return "teacher" in {f.name for f in dataclasses.fields(METHODS[method].Args)}


def preset_teacher(args, out_dir: Path) -> Path:
    """The teacher run of a distillation preset: ``--teacher`` when given, else trained once from the preset's
    teacher config (configs/modul/digits-teacher.yaml) into ``out_dir/teacher`` and reused."""
    if args.teacher:
        return Path(args.teacher)
    if args.preset not in TEACHER_CONFIGS:
        raise SystemExit(f"error: preset {args.preset} has no teacher config; give --teacher RUN")
    folder = Path(out_dir) / "teacher"
    if not (folder / "finished.json").is_file():
        from noisykd.engine import Trainer

        print(f"training the teacher ({TEACHER_CONFIGS[args.preset]}) into {folder} ...", file=sys.stderr, flush=True)
        updates = {"device": args.device, "out_dir": str(folder)}
        if args.preset.startswith("cifar10"):
            updates["data"] = {"spec": f"cifar10:{args.cifar_root}"}
        if any(item.partition("=")[0].strip() == "threads" for item in args.set or []):
            updates["threads"] = _threads(args)  # the only override the teacher takes from the students'
        Trainer(load_config(TEACHER_CONFIGS[args.preset], updates=updates), progress=False).run()
    return folder


def _preset(args, method: str, label_set: str | None, out_dir: Path, method_args: dict) -> dict:
    updates: dict = {"method": method, "method_args": method_args, "device": args.device, "out_dir": str(out_dir),
                     "optim": {}}
    if args.epochs:
        updates["optim"]["epochs"] = args.epochs
    epochs = args.epochs or read_config_file(PRESET_CONFIGS[args.preset])["optim"]["epochs"]
    if args.eval_every is not None:
        updates["eval_every"] = args.eval_every
    subset = {} if args.train_subset is None else {"train_subset": args.train_subset or None}  # 0: all images
    if args.preset == "cifar10n":
        updates["eval_every"] = args.eval_every or 1
        updates["data"] = {"spec": f"cifar10:{args.cifar_root}", "labels": f"cifar10n:{args.cifar_n}:{label_set}",
                           "train_subset": 10000, **subset}
        updates["optim"]["milestones"] = [epochs // 2]  # lr x0.1 at half the run, as the paper's 150 of 300
    if args.preset == "cifar10-sym40":
        updates["eval_every"] = args.eval_every or 1
        updates["data"] = {"spec": f"cifar10:{args.cifar_root}", "train_subset": 10000, **subset}
        # CMD A.2: /10 at epochs 50 and 80 of 100, kept at the same fractions of a shortened run
        updates["optim"]["milestones"] = sorted({max(1, round(0.5 * epochs)), max(1, round(0.8 * epochs))})
    if args.preset == "cifar10-noisy":  # the label sets are synthetic noise specs (sym-all:0.4, ...)
        updates["data"] = {"spec": f"cifar10:{args.cifar_root}", "noise": label_set, **subset}
        # NRD A.1: /10 at 50% and 75% of the training iterations, kept at the same fractions of a shortened run
        updates["optim"]["milestones"] = sorted({max(1, round(0.5 * epochs)), max(1, round(0.75 * epochs))})
    if args.preset in OOD_POOLS:  # the label sets are universal-noise specs (openset:RHO1:RHO2)
        kind, default = OOD_POOLS[args.preset]
        updates["data"] = {"noise": label_set, "ood": f"{kind}:{Path(args.ood or default).resolve()}", **subset}
        if args.preset == "cifar10-openset":
            updates["data"]["spec"] = f"cifar10:{args.cifar_root}"
        # MODUL Sec. V-B: /10 at 40% and 80% of the run (80 and 160 of 200 epochs)
        updates["optim"]["milestones"] = sorted({max(1, round(0.4 * epochs)), max(1, round(0.8 * epochs))})
    return load_config(PRESET_CONFIGS[args.preset], updates=updates).to_dict()


def table5_setting(noise: str) -> str | None:
    """The NRD Table 5 column of a noise spec: ``sym-all:0.4`` -> ``sym40`` (NRD's symmetric noise flips over all
    classes), ``asym:0.2`` -> ``asym20``, ``none`` -> ``clean``; None when Table 5 has no such column."""
    from noisykd.losses.presets import TABLE5_SETTINGS

    kind, _, rate = noise.strip().lower().partition(":")
    if kind == "none":
        return "clean"
    try:
        name = {"sym-all": "sym", "sym": "sym", "asym": "asym"}.get(kind, "?") + str(round(100 * float(rate)))
    except ValueError:
        return None
    return name if name in TABLE5_SETTINGS else None


def apply_table5(cfg: dict, method: str, noise: str) -> None:
    """NRD's protocol (A.1: "for the baselines, we follow the same hyperparameter configurations", Table 5): each
    method of Table 5 gets its learning rate and weight decay for the noise level, and its loss hyperparameters
    (GCE's q, JS's and GJS's pi, NRD's pi) unless its spec gives some. Methods outside the table are left alone."""
    from noisykd.losses.presets import LOSS_PRESETS, nrd_table5_optimizer

    setting = table5_setting(noise)
    preset = f"{method}/cifar10-{setting}"
    if setting is None or preset not in LOSS_PRESETS:
        return
    cfg["optim"].update(nrd_table5_optimizer("cifar10", method, setting))
    if not cfg["method_args"]:
        cfg["method_args"] = ({"preset": f"cifar10-{setting}"} if method == "nrd"
                              else {k: list(v) if isinstance(v, tuple) else v for k, v in LOSS_PRESETS[preset].items()})


def seed_record(run: SeedRun) -> dict:
    """What the results JSON keeps of one seed's run."""
    s = run.summary
    split = (s.get("method_summary") or {}).get("split") or {}
    split = split if "fitting_epoch" in split else {}  # BKD's tipping split (MODUL's split is another kind)
    return {
        "seed": run.seed,
        "test_last": s["last"]["test_acc"],
        "test_best_noisy_val": (s.get("best_noisy_val") or {}).get("test_acc"),
        "test_best_oracle": s["best_test_oracle"]["test_acc"],
        "test_ece_last": s["last"].get("test_ece"),  # expected calibration error (15 bins), main head
        "calibration": s.get("calibration"),  # the last epoch's reliability bins (ECE, per-bin counts / conf. / acc.)
        "curve": learning_curve(run.history()),
        "detection": {k: s["detection"].get(k) for k in ("detector", "rule", "f1", "precision", "recall", "auroc")},
        "noise_rate": s["noise"]["noise_rate"],
        "tipping": {k: split.get(k) for k in ("fitting_epoch", "fallback", "s", "mu1", "mu2")} if split else None,
        "seconds": run.seconds,
        "median_img_per_s": s["median_img_per_s"],
        **distillation_record(run),
    }


def learning_curve(rows: list[dict]) -> dict:
    """Per epoch of one run (its history rows): the test accuracy (None where not evaluated) and the share of
    wrongly labelled training samples the network predicts their wrong label for (``train_fit_wrong_labels``,
    None where the run does not know which labels are wrong): together they show memorisation, the test accuracy
    falling while the wrong labels are learnt."""
    return {"epoch": [r["epoch"] for r in rows], "test_acc": [r.get("test_acc") for r in rows],
            "fit_wrong": [r.get("train_fit_wrong_labels") for r in rows]}


def distillation_record(run: SeedRun) -> dict:
    """For a method that distils a teacher: the teacher's last test accuracy, the student / teacher sizes and, for
    MODUL, its split against the truth (``modul_split.csv`` of the run); nothing for other methods."""
    s = run.summary
    method = s.get("method_summary") or {}
    if "teacher_parameters" not in method:
        return {}
    teacher = [r["test_acc_teacher"] for r in run.history() if r.get("test_acc_teacher") is not None]
    record = {"test_teacher_last": teacher[-1] if teacher else None,
              "teacher_parameters": method["teacher_parameters"], "student_parameters": method["student_parameters"]}
    table = Path(run.out_dir) / "modul_split.csv"
    if table.is_file():
        import csv

        with open(table, newline="") as f:
            record["split"] = {row["group"]: {k: float(v) for k, v in row.items() if k != "group"}
                               for row in csv.DictReader(f)}
    return record


def mean_std(values: list[float]) -> str:
    """Fractions as ``mean ± std`` in % (the shared summary of noisykd compare)."""
    return fmt(summary_mean_std([None if v is None else 100 * v for v in values]))


def ece_cell(runs: list[dict]) -> str:
    """The last epoch's test ECE in %, mean ± std; '(n=K)' when only K of the seeds measured it (results from
    before calibration was measured have none)."""
    return partial_cell([r.get("test_ece_last") for r in runs])


def fit_wrong_cell(runs: list[dict]) -> str:
    """The last epoch's share of wrong training labels the network predicts (memorisation), in %, as
    :func:`ece_cell` (results from before the curves were kept have none)."""
    return partial_cell([((r.get("curve") or {}).get("fit_wrong") or [None])[-1] for r in runs])


def partial_cell(values: list[float | None]) -> str:
    """mean ± std in % of the seeds that measured the value; '(n=K)' when only K of them did."""
    measured = sum(v is not None for v in values)
    return mean_std(values) + (f" (n={measured})" if 0 < measured < len(values) else "")


def markdown(results: dict, args, command: str) -> str:
    seeds = sorted({r["seed"] for by_method in results["runs"].values() for rs in by_method.values() for r in rs})
    lines = [f"# {' vs '.join(_labels(results))}: {args.preset}", "", f"Command: `{command}`", "",
             f"{results['date']}; {results['machine']}; torch {torch.__version__}; seeds {seeds}; "
             f"{results['epochs']} epochs; test/val evaluated "
             f"{_evaluated(results, args)}; "
             f"network {results.get('model', 'small_cnn')}; augmentation {results.get('augment', '-')}.", ""]
    for label_set, by_method in results["runs"].items():
        rate = by_method[next(iter(by_method))][0]["noise_rate"]
        lines += [f"## {label_set} (noise rate {100 * rate:.2f}%)", "",
                  "| method | test acc last | test acc best noisy-val | test acc best (oracle) | ECE last | "
                  "wrong labels fit last | detection F1 | precision | recall | AUROC | detector | s/run |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, runs in by_method.items():
            d = [r["detection"] for r in runs]
            own_seeds = [r["seed"] for r in runs]
            name = method if own_seeds == seeds else f"{method} (seeds {own_seeds})"
            lines.append(
                f"| {name} | {mean_std([r['test_last'] for r in runs])} | "
                f"{mean_std([r['test_best_noisy_val'] for r in runs])} | "
                f"{mean_std([r['test_best_oracle'] for r in runs])} | {ece_cell(runs)} | {fit_wrong_cell(runs)} | "
                f"{mean_std([x['f1'] for x in d])} | "
                f"{mean_std([x['precision'] for x in d])} | {mean_std([x['recall'] for x in d])} | "
                f"{mean_std([x['auroc'] for x in d])} | {d[0]['detector']} | "
                f"{statistics.mean(r['seconds'] for r in runs):.0f} |")
        for variant, runs in by_method.items():
            tips = [r["tipping"] for r in runs if r["tipping"]]
            if not tips:
                continue
            lines += ["", f"{variant} fitting epochs: " + ", ".join(
                f"{t['fitting_epoch']}{' (fallback)' if t['fallback'] else ''} (s {t['s']:.3f}, mu1 {t['mu1']:.3f}, "
                f"mu2 {t['mu2']:.3f})" for t in tips)]
        lines.append("")
    lines += ["Accuracies, ECE (expected calibration error of the main prediction on the test set, 15 bins), "
              "'wrong labels fit' (the share of wrongly labelled training samples whose wrong label the network "
              "predicts at the last epoch: memorisation) and "
              "detection metrics in %, mean ± sample std over seeds. 'best (oracle)' selects the "
              "epoch on the test set and is for analysis only. Two-model methods (CMD and its baselines) report "
              "the mean accuracy of their two models, as the CMD paper does. Detection rules:", ""]
    rules = {}
    for by_method in results["runs"].values():
        for method, runs in by_method.items():
            detection = runs[0]["detection"]
            rules.setdefault(method, f"{detection['detector']}: {detection.get('rule') or '-'}")
    lines += [f"- {method}: {rule}" for method, rule in rules.items()]
    if args.preset == "cifar10n":
        lines += ["", "The CIFAR-10 pixels here were decoded from a JPEG copy (quality ~75): expect accuracies "
                  "0.5-2 points below the original images; the network and schedule are far smaller than the "
                  "papers' (BKD: PreAct-ResNet-18, 300 epochs), so compare the methods with each other here, not "
                  "with the papers' absolute numbers."]
    if args.preset == "cifar10-noisy":
        overrides = [f"`{item}`" for item in getattr(args, "set", None) or []
                     if item.partition("=")[0].strip() != "threads"]  # threads changes no result
        lines += ["", "NRD's CIFAR-10 protocol (A.1, Table 5) at CPU scale (configs/nrd/cifar10-subset-cpu.yaml): a "
                  "stratified subset (5,000 images unless the command's --train-subset says otherwise; 10% held out "
                  f"as noisy validation), small_cnn instead of PreActResNet-34, {results['epochs']} epochs instead of "
                  f"400 (lr /10 at 50% and 75%), the augmentation {results.get('augment', '-')} for every method "
                  "but NRD and GJS, whose views are their own (runs since 2026-12-03: NRD's student GJS's "
                  "RandAugment(1, 3) (ildoonet's table) + crop + flip + Cutout 16, the paper's for every method, its "
                  "teacher flip + crop + AugMix; GJS two draws of that student view, one forward pass each; earlier "
                  "runs: torchvision's RandAugment table, AugMix before crop + flip, and GJS on the run's "
                  "augmentation in one batch); each method's lr, weight decay and loss "
                  "hyperparameters from Table 5 for the noise level unless its spec gives them"
                  + (f", then for every method: {', '.join(overrides)}" if overrides else "") + ". CIFAR-10 decoded "
                  "from a JPEG copy (0.5-2 points below the original images)."]
    if args.preset in OOD_POOLS:
        lines += ["", *distillation_lines(results, args.preset)]
    if args.preset == "cifar10-sym40":
        lines += ["", "CMD's CIFAR-100 setting (configs/ce/cifar100-sym40.yaml: ResNet-34, SGD lr 0.1 /10 at 50% and "
                  "80% of the run, 40% symmetric noise) on CIFAR-10, decoded from a JPEG copy (0.5-2 points below the "
                  f"original images), {results['epochs']} epochs instead of 100. The paper has no CIFAR-10 numbers: "
                  "compare the methods with each other."]
    return "\n".join(lines) + "\n"


def distillation_lines(results: dict, preset: str) -> list[str]:
    """The teacher's accuracy and size next to the students', and MODUL's split against the truth per label set
    (precision / recall of each group, mean over seeds)."""
    data = ("8x8 digits, RHO1 of the training labels noisy, RHO2 of those with a Fashion-MNIST image (resized to "
            "8x8) instead of a digit, the rest another digit's label; teacher small_cnn x2 wide trained on the clean "
            "digits (configs/modul/digits-teacher.yaml)" if preset == "digits-openset" else
            "a stratified 5,000-image CIFAR-10 subset, RHO1 of the labels noisy, RHO2 of those with a Tiny ImageNet "
            "image (resized to 32x32; the 24 classes that overlap CIFAR-10's excluded) instead, the rest another "
            "class's label; weak augmentation; teacher small_cnn x2 wide trained on 10,000 clean CIFAR-10 images "
            "(configs/modul/cifar10-teacher-cpu.yaml)")
    lines = [f"MODUL's Table I protocol at CPU scale (configs/{PRESET_CONFIGS[preset]}.yaml): {data}; student "
             "small_cnn; SGD lr 0.1, /10 at 40% and 80% of the run, batch 64, wd 1e-4 (MODUL Sec. V-B). CE trains "
             "the student on the noisy labels without a teacher.", ""]
    teacher_reported = False
    for label_set, by_method in results["runs"].items():
        for method, runs in by_method.items():
            teacher = [r.get("test_teacher_last") for r in runs if r.get("test_teacher_last") is not None]
            if teacher and not teacher_reported:
                teacher_reported = True
                lines.append(f"- teacher: test accuracy {mean_std(teacher)}, {runs[0]['teacher_parameters']:,} "
                             f"parameters; student {runs[0]['student_parameters']:,} parameters "
                             f"({runs[0]['student_parameters'] / runs[0]['teacher_parameters']:.2f} of the teacher)")
            splits = [r["split"] for r in runs if r.get("split")]
            if splits and "precision" in splits[0]["clean"]:
                cells = ", ".join(
                    f"{g} {statistics.mean(x[g]['samples'] for x in splits):.0f} samples (precision "
                    f"{mean_std([x[g]['precision'] for x in splits])}, recall {mean_std([x[g]['recall'] for x in splits])})"
                    for g in ("clean", "closed", "open"))
                lines.append(f"- {label_set}, {method} split: {cells}")
    return lines


def _evaluated(results: dict, args) -> str:
    """How often the runs evaluated: recorded in the results (older files: from the command's --eval-every)."""
    every = results.get("eval_every") or (1 if args.preset == "digits" else args.eval_every or 1)
    return "every epoch" if every == 1 else f"every {every} epochs and at the last"


def _labels(results: dict) -> list[str]:
    """The method labels of a results dict, in their order."""
    return list(dict.fromkeys(m for by_method in results["runs"].values() for m in by_method))


#: cifar10-noisy's default label sets: NRD Table 2's columns that bracket its claims (40% and 80% symmetric noise)
NOISY_LABEL_SETS = ["sym-all:0.4", "sym-all:0.8"]
#: digits-openset's default label sets: MODUL Table I's middle setting and its hardest (rho1 = rho2 = 0.75)
OPENSET_LABEL_SETS = ["openset:0.5:0.5", "openset:0.75:0.75"]


def preset_label_sets(args) -> list[str]:
    """The label sets a run covers: digits and cifar10-sym40 have one (40% symmetric noise), cifar10n the CIFAR-10N
    label sets asked for, cifar10-noisy the noise specs asked for (``sym-all:0.4 sym-all:0.8`` by default)."""
    if args.preset in ("digits", "cifar10-sym40"):
        return ["sym:0.4"]
    if args.label_sets:
        return args.label_sets
    if args.preset in OOD_POOLS:
        return OPENSET_LABEL_SETS
    return NOISY_LABEL_SETS if args.preset == "cifar10-noisy" else args.default_label_sets


def add_preset_arguments(parser: argparse.ArgumentParser, seeds: list[int], label_sets: list[str]) -> None:
    """The data / network / run options shared by the BKD benchmarks (``preset_config`` reads them)."""
    parser.add_argument("--preset", choices=tuple(PRESET_CONFIGS), default="digits")
    parser.set_defaults(default_label_sets=label_sets)
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--label-sets", nargs="+", default=None,
                        help=f"cifar10n: CIFAR-10N label sets (default {' '.join(label_sets)}); cifar10-noisy: "
                             f"noise specs (default {' '.join(NOISY_LABEL_SETS)}); digits-openset: universal-noise "
                             f"specs (default {' '.join(OPENSET_LABEL_SETS)})")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-subset", type=int, default=None,
                        help="CIFAR presets: training images (0: all; default: cifar10n and cifar10-sym40 10,000, "
                             "cifar10-noisy its config's 5,000)")
    parser.add_argument("--augment", default=None, help="augmentation policy instead of the preset's, e.g. none")
    parser.add_argument("--model", default=None, help="network instead of small_cnn, e.g. preact_resnet18")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any run-config override, as noisykd train --set (e.g. data.val_fraction=0, amp=bf16)")
    parser.add_argument("--cifar-root", default="/tmp/c10")
    parser.add_argument("--cifar-n", default="../shared/data/cifar-n/CIFAR-10_human.pt")
    parser.add_argument("--ood", default=None,
                        help="universal-noise presets: the open-set images' source (digits-openset: the Fashion-MNIST "
                             "folder, default ../shared/data/fashion-mnist; cifar10-openset: the Tiny ImageNet tarball, "
                             "default ../shared/data/tinyimagenet/tinyimagenet-val-test-jpeg.tar.gz)")
    parser.add_argument("--teacher", default=None,
                        help="distillation presets: the teacher run (default: trained from the preset's teacher config)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="evaluate every this many epochs (default: the preset config's; cifar10n: 1)")
    parser.add_argument("--out", default=None)


def results_header(args) -> dict:
    """Date, exact command and machine of a benchmark run, the start of every results JSON."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": "python " + " ".join(sys.argv),
            "machine": f"{cpu_model()}, {_threads(args)} threads, device {args.device}"}


def _threads(args) -> int:
    """The torch threads the runs train with: ``--set threads=N`` when given (the engine sets it per run),
    else this process's."""
    for item in getattr(args, "set", None) or []:
        key, _, value = item.partition("=")
        if key.strip() == "threads" and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_preset_arguments(parser, seeds=[0, 1, 2], label_sets=["worst", "aggre"])
    parser.add_argument("--methods", nargs="+", default=["ce", "bkd", "bkd_ref"],
                        help="method specs as for noisykd compare (ce, gce:q=0.5, bkd, bkd_ref, "
                             "cmd_p=cmd:self_kd=mconf, ...) or a grid name: " + ", ".join(GRIDS))
    parser.add_argument("--merge", nargs="+", metavar="RESULTS.json",
                        help="trains nothing: combine results files of one preset (e.g. two halves of a grid run side "
                             "by side on two cores) into one table at --out")
    args = parser.parse_args()
    if args.merge:
        merge_results(args.merge, parser, Path(args.out or "merged"))
        return
    args.methods = [spec for name in args.methods for spec in GRIDS.get(name, [name])]
    out = Path(args.out or f"benchmarks/results/bkd-vs-ce-{args.preset}")
    results = {**results_header(args), "epochs": None, "runs": {}}
    command = results["command"]
    with tempfile.TemporaryDirectory() as tmp:
        for label_set in preset_label_sets(args):
            for spec in args.methods:
                label = parse_method_spec(ALIASES.get(spec, spec))[0]
                cfg = preset_config(args, spec, label_set, Path(tmp))
                results.update(epochs=cfg["optim"]["epochs"], model=cfg["model"]["name"],
                               augment=cfg["augment"]["policy"], eval_every=cfg["eval_every"])
                runs = run_seeds(Setting(f"{label_set}/{label}", cfg), args.seeds, tmp, on_seed=say_seed)
                for r in runs:
                    print(f"    seed {r.seed}: last {r.value('test_last'):.2f} oracle {r.value('test_oracle'):.2f} "
                          f"F1 {r.value('f1'):.2f} ({r.seconds:.0f} s)", file=sys.stderr, flush=True)
                results["runs"].setdefault(label_set, {})[label] = [seed_record(r) for r in runs]
    write_results(out, results, markdown(results, args, command), reliability=True)


def merge_results(specs: list[str], parser: argparse.ArgumentParser, out: Path) -> None:
    """One results file from several of the same preset, epochs, network and augmentation; each part's command is
    kept. Label sets are the union of the parts' (a part may hold one noise level, another the next: one table
    each), in the order they first appear; methods keep their order, part by part. A part ``FILE.json:a,b`` takes
    only the methods labelled a and b from FILE (e.g. to leave out a method that was measured again)."""
    paths, parts = [], []
    for spec in specs:
        path, _, only = spec.partition(".json:")
        path = Path(path + ".json" if only else spec)
        part = json.loads(path.read_text())
        if only:
            keep = only.split(",")
            missing = sorted(set(keep) - {m for by_method in part["runs"].values() for m in by_method})
            if missing:
                sys.exit(f"{path}: no method labelled {', '.join(missing)}")
            part["runs"] = {ls: {m: r for m, r in by_method.items() if m in keep}
                            for ls, by_method in part["runs"].items()}
        paths.append(path)
        parts.append(part)
    keys = ("epochs", "model", "augment")
    for path, part in zip(paths[1:], parts[1:]):
        differing = [k for k in keys if part.get(k) != parts[0].get(k)]
        if differing:
            sys.exit(f"{path}: not the same setting as {paths[0]} ({', '.join(differing)} differ)")
    runs: dict = {}
    for part in parts:
        for label_set, by_method in part["runs"].items():
            merged_set = runs.setdefault(label_set, {})
            for method, records in by_method.items():
                # one method's seeds may come from several files (seeds run side by side); a seed only once
                known = {r["seed"] for r in merged_set.get(method, [])}
                clash = sorted(known & {r["seed"] for r in records})
                if clash:
                    sys.exit(f"seeds {clash} of method {method!r} ({label_set}) appear in more than one file")
                merged_set[method] = sorted(merged_set.get(method, []) + records, key=lambda r: r["seed"])
    command = "python " + " ".join(sys.argv)
    machines = list(dict.fromkeys(part["machine"] for part in parts))
    merged = {**parts[0], "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC (merged)"),
              "machine": "; ".join(machines),
              "command": command, "parts": [{"file": spec, "command": part["command"],
                                                         "date": part["date"], "machine": part["machine"]}
                                                        for spec, part in zip(specs, parts)], "runs": runs}
    first_args = parser.parse_args(shlex.split(parts[0]["command"])[2:])  # preset, eval_every of the runs
    # the table's numbers come from the parts' runs: each one's command, date and machine under the table
    details = ["", f"<details><summary>The {len(parts)} runs merged here</summary>", ""]
    details += [f"- {part['date']}, {part['machine']}: `{part['command']}`"
                + (f" (from it: {spec.partition('.json:')[2]})" if ".json:" in spec else "")
                for spec, part in zip(specs, parts)]
    write_results(out, merged, markdown(merged, first_args, command) + "\n".join(details + ["", "</details>", ""]),
                  reliability=True)


def _panel_runs(results: dict) -> dict[str, dict[str, dict]]:
    """label set -> method -> the seed record each reliability panel shows: the lowest seed that recorded its bins
    in every method and label set (one seed for the whole figure, so that panels compare), else each method's
    lowest seed that did (older results have no bins)."""
    every = [runs for by_method in results["runs"].values() for runs in by_method.values()]
    calibrated = [{r["seed"] for r in runs if r.get("calibration")} for runs in every]
    common = set.intersection(*calibrated) if calibrated else set()
    panels: dict[str, dict[str, dict]] = {}
    for label_set, by_method in results["runs"].items():
        for method, runs in by_method.items():
            usable = sorted((r for r in runs if r.get("calibration")), key=lambda r: (r["seed"] not in common,
                                                                                       r["seed"]))
            if usable:
                panels.setdefault(label_set, {})[method] = usable[0]
    return panels


def reliability_figure(results: dict, path: Path) -> Path | None:
    """Reliability diagrams of every method (columns) on every label set (rows) (NRD Fig. 5's comparison), the
    seeds as :func:`_panel_runs` picks them; None when no run recorded its bins."""
    from noisykd.calibration import Reliability
    from noisykd.plots import plot_reliability_grid

    panels = _panel_runs(results)
    if not panels:
        return None
    rows = {label_set: {method: Reliability.from_dict(r["calibration"]) for method, r in cells.items()}
            for label_set, cells in panels.items()}
    plot_reliability_grid(rows, path, title=f"{results.get('model', '')}, {results.get('epochs')} epochs: test "
                                            "accuracy per confidence bin at the last epoch")
    return path


def curves_figure(results: dict, path: Path) -> Path | None:
    """Test accuracy and wrong labels fit per epoch, every method a line (mean over its seeds with a curve), one
    row per label set; None when no run kept its curve (results from before the curves were kept)."""
    from noisykd.plots import plot_learning_curves

    rows = {}
    for label_set, by_method in results["runs"].items():
        for method, runs in by_method.items():
            curves = [r["curve"] for r in runs if r.get("curve")]
            if curves:
                rows.setdefault(label_set, {})[method] = mean_curve(curves)
    if not rows:
        return None
    plot_learning_curves(rows, path, title=f"{results.get('model', '')}, {results.get('epochs')} epochs")
    return path


def mean_curve(curves: list[dict]) -> dict:
    """The mean over seeds, epoch by epoch, of each series of :func:`learning_curve` (an epoch's mean is None when
    any seed lacks it there); the epochs of the shortest curve."""
    length = min(len(c["epoch"]) for c in curves)
    mean = {"epoch": curves[0]["epoch"][:length]}
    for key in ("test_acc", "fit_wrong"):
        columns = zip(*(c[key][:length] for c in curves))
        mean[key] = [None if any(v is None for v in values) else statistics.mean(values) for values in columns]
    return mean


def figure_caption(results: dict) -> str:
    """Which seed each panel of the reliability figure shows."""
    seeds = sorted({r["seed"] for cells in _panel_runs(results).values() for r in cells.values()})
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds}, the lowest that recorded its bins"
    return (f"Each panel: one run ({which}); bars: accuracy per confidence bin, hatched: the gap to the bin's "
            "mean confidence, dashed: perfect calibration; the legend gives the run's ECE.")


def say_seed(setting: Setting, seed: int, state: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {setting.name} seed {seed} ...", file=sys.stderr, flush=True)


def write_results(out: Path, results: dict, text: str, reliability: bool = False) -> None:
    """``OUT.json`` (everything measured) and ``OUT.md`` (the table with its command); the table to stdout.
    With ``reliability`` (results of this script: label set -> method -> seed records), ``OUT-reliability.png``
    too when the runs recorded their reliability bins."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = reliability_figure(results, Path(f"{out}-reliability.png")) if reliability else None
    if figure:
        text += f"\n![Reliability diagrams, last epoch, test set]({figure.name})\n\n{figure_caption(results)}\n"
    curves = curves_figure(results, Path(f"{out}-curves.png")) if reliability else None
    if curves:
        text += (f"\n![Test accuracy and wrong labels fit per epoch]({curves.name})\n\nPer epoch, mean over the "
                 "seeds that kept their curves: the test accuracy (left) and the share of wrongly labelled training "
                 "samples whose wrong label the network predicts (right). Memorisation shows as the test accuracy "
                 "falling while the right-hand curve rises.\n")
    # appended, not with_suffix: a name such as "transit0.1" must keep its ".1"
    Path(f"{out}.json").write_text(json.dumps(results, indent=1))
    Path(f"{out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
