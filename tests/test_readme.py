"""The "Writing a method" page's example (docs/writing-a-method.md, linked from the README) is real code: it
registers, trains and keeps the contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from noisykd.config import load_config
from noisykd.engine import Trainer
from noisykd.errors import ConfigError
from noisykd.methods import METHODS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-method.md"


def page_example() -> str:
    """The first Python block of the page: the whole mean-teacher method."""
    section = PAGE.read_text().split("# Writing a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_writing_a_method_example_trains(tmp_path):
    exec(compile(page_example(), str(PAGE), "exec"), {})
    try:
        with pytest.raises(ConfigError, match="method_args.decay must lie in"):
            load_config("digits/sym40", updates={"method": "mean_teacher", "method_args": {"decay": 2}})
        cfg = load_config("digits/sym40", updates={"method": "mean_teacher", "method_args": {"decay": 0.9},
                                                   "out_dir": str(tmp_path / "mt"),
                                                   "optim": {"epochs": 2}, "augment": {"policy": "weak"}})
        trainer = Trainer(cfg, progress=False)
        result = trainer.run()
        assert {"test_acc", "test_acc_ema", "train_agreement"} <= set(result.history[-1])
        assert [g["lr_scale"] for g in trainer.optimizer.param_groups] == [1.0, 10.0]
        assert result.summary["best_test_oracle"]["test_acc"] > 0.2  # learns: chance is 0.1 (2 epochs give 0.3-0.5)
    finally:
        METHODS.unregister("mean_teacher")
