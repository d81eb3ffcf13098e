"""Data fixtures shared by the test modules: where the real data lives, and CIFAR-10 built from it once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# ../shared/data relative to the repository root; a fresh user machine never has it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """``SHARED_DATA/parts``, or skip the calling test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (tests marked shared_data need ../shared/data)")
    return path


@pytest.fixture(scope="session")
def cifar10n_file() -> Path:
    """The official CIFAR-10N ``CIFAR-10_human.pt``."""
    return shared_path("cifar-n", "CIFAR-10_human.pt")


@pytest.fixture(scope="session")
def cifar100n_file() -> Path:
    """The official CIFAR-100N ``CIFAR-100_human.pt``."""
    return shared_path("cifar-n", "CIFAR-100_human.pt")


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """The folder of the four official Fashion-MNIST ``*-ubyte.gz`` files."""
    return shared_path("fashion-mnist")


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """A folder holding ``cifar-10-batches-py/``, built once per session from the shared JPEG copy (~10 s)."""
    script = shared_path("cifar10", "build_cifar10.py")
    dest = tmp_path_factory.mktemp("cifar10")
    done = subprocess.run([sys.executable, str(script), str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{script} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return dest


@pytest.fixture
def train_cli_error(tmp_path):
    """``train_cli_error(method, setting)`` runs ``noisykd train --config digits/sym40 --method METHOD --set
    SETTING``, asserts that it stops with exit code 2, one line of output holding ``error:`` and no run folder
    written, and returns that line (for the test to check what it names)."""
    from typer.testing import CliRunner

    from noisykd.cli import app

    def run(method: str, setting: str) -> str:
        out = tmp_path / "run"
        result = CliRunner().invoke(app, ["train", "--config", "digits/sym40", "--method", method, "--set", setting,
                                          "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "error:" in lines[0], result.output
        assert not out.exists()
        return lines[0]

    return run
