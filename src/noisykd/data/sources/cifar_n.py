"""``cifar10n:FILE[:NAME]`` and ``cifar100n:FILE[:NAME]``: the CIFAR-N human label sets (Wei et al., ICLR 2022).

FILE is the official ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt``: a torch zip archive whose pickle is a dict of
numpy arrays (or lists), 50,000 labels each, in the official CIFAR training order. It is read with
:func:`noisykd.safe_pickle.load_torch_zip_pickle`, which refuses anything but numpy arrays and plain containers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ...safe_pickle import load_torch_zip_pickle
from ..base import validate_labels
from ..registry import LabelSet, register_labelset
from .cifar import get_key

# NAME -> (key of the noisy labels, key of the matching clean labels, number of classes)
CIFAR10N_SETS: dict[str, tuple[str, str, int]] = {
    "aggre": ("aggre_label", "clean_label", 10),
    "rand1": ("random_label1", "clean_label", 10),
    "rand2": ("random_label2", "clean_label", 10),
    "rand3": ("random_label3", "clean_label", 10),
    "worst": ("worse_label", "clean_label", 10),
    "clean": ("clean_label", "clean_label", 10),
}
CIFAR100N_SETS: dict[str, tuple[str, str, int]] = {
    "noisy": ("noisy_label", "clean_label", 100),
    "clean": ("clean_label", "clean_label", 100),
    "coarse_noisy": ("noisy_coarse_label", "clean_coarse_label", 20),
    "coarse_clean": ("clean_coarse_label", "clean_coarse_label", 20),
}
# Spellings people also use (the docs' and the file's own key names); they map to the names above.
ALIASES = {"worse": "worst", "random1": "rand1", "random2": "rand2", "random3": "rand3", "aggregate": "aggre"}


def split_file_and_name(arg: str, names: dict, default: str, kind: str) -> tuple[Path, str]:
    """Split ``FILE[:NAME]`` -> (FILE, NAME).

    The last ':' separates a NAME only when what follows is a known name (or alias), so paths may contain ':'.
    A suffix that is neither a known name nor part of an existing path raises a :class:`DataError` listing
    the valid names.
    """
    if not arg:
        raise DataError(f"{kind} needs a file: {kind}:FILE[:NAME] with NAME in {', '.join(names)}")
    head, sep, tail = arg.rpartition(":")
    if sep and head:
        name = ALIASES.get(tail, tail)
        if name in names:
            return Path(head).expanduser(), name
        # An unknown suffix without path separators is most likely a mistyped name, unless the whole
        # argument is a real file whose name happens to contain ':'.
        if "/" not in tail and "\\" not in tail and not Path(arg).expanduser().exists():
            raise DataError(
                f"{kind}:{arg}: unknown label set {tail!r}; expected one of {', '.join(names)} "
                f"(and no file named {arg!r} exists)"
            )
    return Path(arg).expanduser(), default


def read_label_array(data: dict, key: str, num_classes: int, *, source: str) -> np.ndarray:
    """``data[key]`` as int64 N with values in [0, num_classes); errors name ``source`` and the key."""
    raw = get_key(data, key, source=source)  # str keys as torch.save writes them; bytes keys accepted too
    try:
        values = np.asarray(raw)
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: {key!r} is not an array of integer labels: {e}") from None
    return validate_labels(values, num_classes, source=f"{source} ({key!r})")


def load_human_labels(path: Path, name: str, table: dict[str, tuple[str, str, int]], kind: str) -> LabelSet:
    """Read the label set ``name`` of ``table`` from a CIFAR-N ``.pt`` file -> LabelSet(noisy, clean)."""
    data = load_torch_zip_pickle(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of label arrays, found {type(data).__name__}")
    noisy_key, clean_key, num_classes = table[name]
    noisy = read_label_array(data, noisy_key, num_classes, source=str(path))
    clean = read_label_array(data, clean_key, num_classes, source=str(path))
    if len(noisy) != len(clean):
        raise DataError(
            f"{path}: {noisy_key!r} has {len(noisy)} labels but {clean_key!r} has {len(clean)}; they must match"
        )
    return LabelSet(f"{kind}:{name}", noisy=noisy, clean=clean)


CIFAR10N_USAGE = "cifar10n:FILE[:aggre|rand1|rand2|rand3|worst|clean] (CIFAR-10_human.pt, default worst)"


@register_labelset("cifar10n", CIFAR10N_USAGE)
def load_cifar10n(arg: str = "") -> LabelSet:
    """CIFAR-10N: 50,000 human labels per set; noise rates aggre 9.01%, rand1-3 ~17-18%, worst 40.21%."""
    path, name = split_file_and_name(arg, CIFAR10N_SETS, "worst", "cifar10n")
    return load_human_labels(path, name, CIFAR10N_SETS, "cifar10n")


CIFAR100N_USAGE = "cifar100n:FILE[:noisy|clean|coarse_noisy|coarse_clean] (CIFAR-100_human.pt, default noisy)"


@register_labelset("cifar100n", CIFAR100N_USAGE)
def load_cifar100n(arg: str = "") -> LabelSet:
    """CIFAR-100N: 50,000 human fine labels (40.20% noise); coarse_* give the 20-superclass labels."""
    path, name = split_file_and_name(arg, CIFAR100N_SETS, "noisy", "cifar100n")
    return load_human_labels(path, name, CIFAR100N_SETS, "cifar100n")
