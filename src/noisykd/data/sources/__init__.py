"""Built-in data and label sources; importing this package registers them."""

from . import cifar, cifar_n, digits, folder, idx, npz, tinyimagenet  # noqa: F401
