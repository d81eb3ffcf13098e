"""noisykd's messages go through ``logging.getLogger("noisykd")`` (library style: silent until configured).

The command line shows them on stderr (:func:`log_to_stderr`); a program can configure the ``noisykd`` logger
as it likes, and :func:`silenced` quiets it for a block (the demo's runs; later, the non-zero ranks of a
distributed run).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

LOGGER = "noisykd"


class _StderrHandler(logging.Handler):
    """Records as plain lines on the *current* sys.stderr (looked up at each record, so that a test runner that
    swaps stderr between commands still sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def log_to_stderr(level: int = logging.INFO) -> None:
    """Show noisykd's messages of ``level`` and above (INFO: a line per epoch, resumptions, fallbacks) on stderr;
    idempotent."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(level)


@contextlib.contextmanager
def silenced(level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, only messages of ``level`` and above (warnings, by default) are shown."""
    logger = logging.getLogger(LOGGER)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
