"""``python -m noisykd ...``: the command line, as the ``noisykd`` script (also where no script is installed)."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="noisykd")
