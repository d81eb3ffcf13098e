"""Run outputs: per-epoch metrics (CSV + JSONL), the summary JSON, training-curve plots."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from .guard import best_validated

ORACLE_NOTE = "oracle: epoch chosen on the test set itself; for analysis only, not a fair model selection"


def write_metrics(history: list[dict], folder: Path) -> None:
    """Rewrite ``metrics.csv`` and ``metrics.jsonl`` from the whole history (so a resumed run has no
    duplicated or stale rows)."""
    if not history:
        return
    _atomic_text(folder / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    write_rows_csv(history, folder / "metrics.csv")


def write_rows_csv(rows: list[dict], path: Path) -> None:
    """Write dict rows as a CSV (columns: every key, in order of first appearance), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def model_selection(history: list[dict], metric: str = "test_acc") -> dict:
    """The three selections every run reports: last epoch, best noisy-validation epoch, best test (oracle)."""
    last = history[-1]
    out: dict = {"last": {"epoch": last["epoch"], metric: last.get(metric), **_ece(last)}}
    if last.get("val_acc") is not None:
        out["last"]["val_acc"] = last["val_acc"]
    best = best_validated(history)
    if best is not None:
        out["best_noisy_val"] = {"epoch": best["epoch"], "val_acc": best["val_acc"], metric: best.get(metric),
                                 **_ece(best)}
    else:
        out["best_noisy_val"] = None
    with_test = [r for r in history if r.get(metric) is not None]
    if with_test:
        best = max(with_test, key=lambda r: r[metric])
        out["best_test_oracle"] = {"epoch": best["epoch"], metric: best[metric], **_ece(best), "note": ORACLE_NOTE}
    return out


def _ece(row: dict) -> dict:
    """The row's test ECE, when it was measured (a row of a history without a test split has none)."""
    return {"test_ece": row["test_ece"]} if row.get("test_ece") is not None else {}


def run_summary(config, data, history: list[dict], detection: dict, method_summary: dict, device: str,
                calibration: dict | None = None) -> dict:
    """What ``summary.json`` holds: the run's setting, the three model selections (last, best noisy-val, best
    test as an oracle), the detection (detector, rule and, when the truth is known, its metrics), the
    calibration of the last epoch's test prediction (ECE and reliability bins), the method's own summary and
    the median training throughput."""
    import numpy as np

    return {
        "method": config.method,
        "model": config.model.name,
        "data": config.data.spec,
        "classes": list(data.dataset.classes),
        "epochs": config.optim.epochs,
        "train_samples": len(data.train),
        "val_samples": len(data.val) if data.val is not None else 0,
        "test_samples": len(data.test) if data.test is not None else 0,
        "noise": data.noisy.summary(),
        "normalization": {"mean": list(data.normalization.mean), "std": list(data.normalization.std),
                          "source": data.normalization.source},
        **model_selection(history),
        "detection": detection,
        "calibration": calibration,
        "method_summary": method_summary,
        "median_img_per_s": float(np.median([r["img_per_s"] for r in history])),
        "device": device,
    }


def session_info(device: str) -> dict:
    """Where and how a run (or its resumption) ran: versions, command line, start time, threads, machine."""
    import platform
    import socket
    import sys
    from datetime import datetime, timezone

    import torch

    from .. import __version__

    return {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": sys.argv,
            "noisykd": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()} {cpu_model()}", "host": socket.gethostname(),
            "torch_threads": torch.get_num_threads(), "device": device,
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None}


def append_session(path: Path, info: dict) -> None:
    """Add a session to ``run_info.json`` (a run resumed twice has three)."""
    sessions = []
    if path.is_file():
        try:
            sessions = json.loads(path.read_text()).get("sessions", [])
        except (json.JSONDecodeError, AttributeError):
            sessions = []
    write_json({"sessions": [*sessions, info]}, path)


def cpu_model() -> str:
    """The CPU's model name (float results can depend on its kernels), or an empty string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def write_json(obj: dict, path: Path) -> None:
    _atomic_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_text(text: str, path: Path) -> None:
    """``path`` holds ``text`` whole or not at all (a temporary file renamed over it)."""
    _atomic_text(path, text)


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracies per epoch as a PNG (two panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("loss"), ax_loss.grid(alpha=0.3), ax_loss.legend()
    labels = {"train_acc_noisy": "train (given labels)", "train_acc_clean": "train (clean labels)",
              "val_acc": "noisy validation", "test_acc": "test"}
    acc_keys = [k for k in labels if any(r.get(k) is not None for r in history)]
    acc_keys += sorted({k for r in history for k in r if k.startswith("test_acc_")})
    for key in acc_keys:
        ys = [r.get(key) for r in history]
        ax_acc.plot(epochs, [math.nan if y is None else y for y in ys], label=labels.get(key, key))
    ax_acc.set_xlabel("epoch"), ax_acc.set_ylabel("accuracy"), ax_acc.grid(alpha=0.3), ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
