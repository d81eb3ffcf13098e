"""``noisykd demo``: the main job on built-in data, in about a minute on a 2-core CPU (66-75 s here).

scikit-learn's 8x8 digits with 40% symmetric label noise (10% of the noisy training set held out as noisy
validation, the CIFAR-N protocol); plain cross-entropy against the robust loss GCE and against BKD (with the
paper's and with the authors' code's gradients);
a table of test accuracy at the last epoch, at the best noisy-validation epoch and (oracle) the best test
epoch, the share of wrong labels each model ends up fitting, and the F1 of its wrong-label detection (BKD's
own P_A < mu1 rule; for the others DivideMix's GMM on the final loss), and a plot of the test accuracy per
epoch, which shows CE memorising the wrong labels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from .config import load_config
from .engine import Trainer
from .engine.runfolder import RunFolder
from .logs import silenced

# name shown -> (method, method_args): CE, then the methods it is compared with. BKD runs twice: with the
# paper's stop-gradients (the default) and with the authors' code's gradients, which differ markedly here.
DEMO_METHODS: dict[str, tuple[str, dict]] = {
    "ce": ("ce", {}),
    "gce": ("gce", {}),
    "bkd": ("bkd", {}),
    "bkd_ref": ("bkd", {"reference_gradients": True}),
}


#: The demo's setting: configs/digits/sym40.yaml (digits, 40% symmetric noise, small_cnn, cosine lr 0.05).
DEMO_CONFIG = "digits/sym40"


def demo_config(method: str, method_args: dict, out_dir: Path, epochs: int, seed: int):
    """The resolved config of one demo run."""
    return load_config(DEMO_CONFIG, updates={"method": method, "method_args": method_args, "seed": seed,
                                             "out_dir": str(out_dir), "optim": {"epochs": epochs}})


def run_demo(out: Path, epochs: int = 60, seed: int = 0, console: Console | None = None) -> dict:
    """Train every demo method, print the comparison, write ``demo.json``, ``demo.md`` and ``demo.png``."""
    console = console or Console(markup=False)  # paths print as they are, never as markup
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    noise = demo_config("ce", {}, out, epochs, seed).data.noise
    console.print(Text.assemble(("noisykd demo", "bold"), f": 8x8 digits, {noise} label noise, {epochs} epochs per "
                                f"method, outputs in {out}"))
    results = {}
    with Progress(TextColumn("  {task.description:<8}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                  TextColumn("{task.fields[result]}", markup=False), console=console) as bars:
        tasks = {name: bars.add_task(name, total=epochs, result="", start=False) for name in DEMO_METHODS}
        for name, (method, args) in DEMO_METHODS.items():
            start = time.perf_counter()
            run_dir = out / name
            cfg = demo_config(method, args, run_dir, epochs, seed)
            resume = RunFolder(run_dir).state() in ("resumable", "finished")  # a second demo continues or reuses

            def epoch_done(trainer, epoch, step, task=tasks[name]):
                if step == trainer.steps_per_epoch - 1:
                    bars.update(task, completed=epoch + 1)

            bars.start_task(tasks[name])
            with silenced():
                result = Trainer(cfg, progress=False, on_step=epoch_done).run(resume=resume)
            bars.stop_task(tasks[name])
            results[name] = {"summary": result.summary, "history": result.history,
                             "seconds": time.perf_counter() - start}
            s = result.summary
            bars.update(tasks[name], completed=epochs,
                        result=f"last {100 * s['last']['test_acc']:.2f}%   best {100 * s['best_test_oracle']['test_acc']:.2f}%"
                               f"   ({results[name]['seconds']:.1f} s)")
    table = comparison_table(results)
    console.print(table)
    _write_outputs(results, out)
    console.print("bkd: the paper's stop-gradients (default); bkd_ref: the authors' code's gradients "
                  "(method_args.reference_gradients=true)")
    console.print(f"plots: {out / 'demo.png'}; per-run outputs in {out}/<method>/ (BKD's histogram of P_A with "
                  f"Otsu's thresholds: {out / 'bkd' / 'bkd_agreement_histogram.png'})")
    return results


def comparison_table(results: dict) -> Table:
    table = Table("method", "last", "best val", "oracle", "fits\nwrong", "F1", "Pr", "Re",
                  title="8x8 digits, 40% symmetric label noise: test accuracy (last, best noisy-val, best test) "
                        "| wrong labels fitted | detection")
    for method, r in results.items():
        s = r["summary"]
        d = s.get("detection") or {}
        table.add_row(method, _pct(s["last"]["test_acc"]), _pct((s.get("best_noisy_val") or {}).get("test_acc")),
                      _pct(s["best_test_oracle"]["test_acc"]), _pct(r["history"][-1].get("train_fit_wrong_labels")),
                      _pct(d.get("f1")), _pct(d.get("precision")), _pct(d.get("recall")))
    table.caption = ("best val: epoch of best noisy-validation accuracy; detection: BKD's own rule (P_A < mu1), "
                     "for the others a 2-component GMM on the final loss")
    return table


def _write_outputs(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compact = {m: {"summary": r["summary"], "seconds": r["seconds"],
                   "test_acc": [row["test_acc"] for row in r["history"]]} for m, r in results.items()}
    (out / "demo.json").write_text(json.dumps(compact, indent=2, default=str))
    lines = ["| method | test acc (last) | test acc (best noisy val) | test acc (best, oracle) | "
             "wrong labels fitted | detection F1 (Pr / Re) |", "|---|---|---|---|---|---|"]
    for m, r in results.items():
        s = r["summary"]
        d = s.get("detection") or {}
        lines.append(f"| {m} | {_pct(s['last']['test_acc'])} | "
                     f"{_pct((s.get('best_noisy_val') or {}).get('test_acc'))} | "
                     f"{_pct(s['best_test_oracle']['test_acc'])} | "
                     f"{_pct(r['history'][-1].get('train_fit_wrong_labels'))} | {_pct(d.get('f1'))} "
                     f"({_pct(d.get('precision'))} / {_pct(d.get('recall'))}) |")
    (out / "demo.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for m, r in results.items():
        ax.plot([row["epoch"] for row in r["history"]], [row["test_acc"] for row in r["history"]], label=m)
    ax.set_xlabel("epoch"), ax.set_ylabel("test accuracy"), ax.grid(alpha=0.3), ax.legend()
    ax.set_title("8x8 digits, 40% symmetric label noise")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=110)
    plt.close(fig)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
