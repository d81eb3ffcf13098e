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
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
        logger.propagate = False
    handler.setLevel(level)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)


@contextlib.contextmanager
def silenced(level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, only messages of ``level`` and above (warnings, by default) reach the console; a run's
    own ``train.log`` still gets everything."""
    logger = logging.getLogger(LOGGER)
    handlers = [h for h in logger.handlers if isinstance(h, _StderrHandler)]
    previous = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(max(h.level, level))
    try:
        yield
    finally:
        for h, old in zip(handlers, previous):
            h.setLevel(old)
