"""One set of flags across the training commands: the same spelling, short form, type and help everywhere.

A new user found ``detect --epochs 20`` refused while train, compare and demo took it, and ``--threads`` missing
from detect and compare. These tests read the commands as click builds them, so that a flag added, renamed or
reworded in one command only fails here.
"""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from noisykd import cli
from noisykd.cli import app

COMMANDS = ("train", "detect", "compare", "demo", "reproduce")
SHARED = ("epochs", "threads", "device", "seed", "out", "set")

#: Where a shared flag does not apply, and why. Every other (command, flag) pair must have the flag.
NOT_APPLICABLE = {
    ("detect", "out"): "detect writes its results into RUN, the run folder it judges (RUN is its argument)",
}

#: The shared flags' declarations, as the commands must all carry them.
DECLARED = {"epochs": cli.EPOCHS_OPTION, "threads": cli.THREADS_OPTION, "device": cli.DEVICE_OPTION,
            "seed": cli.SEED_OPTION, "out": cli.OUT_OPTION, "set": cli.SET_OPTION}


def words(output: str) -> str:
    """Terminal output as one line of words: typer's error box (its borders, its line breaks) left out."""
    return " ".join(output.replace("│", " ").split())


def options_of(command: str) -> dict:
    """``{long flag without dashes: click parameter}`` of one command."""
    group = typer.main.get_command(app)
    params = group.commands[command].params
    return {opt[2:]: p for p in params for opt in p.opts if opt.startswith("--")}


def describe(param) -> tuple:
    """What must be identical across commands: every name (long and short), the value type and the help."""
    return (tuple(sorted(param.opts)), tuple(sorted(param.secondary_opts)), param.type_descriptor.annotation,
            param.multiple, param.help)


@pytest.mark.parametrize("flag", SHARED)
def test_each_shared_flag_is_the_same_in_every_command_that_takes_it(flag):
    seen = {}
    for command in COMMANDS:
        options = options_of(command)
        if (command, flag) in NOT_APPLICABLE:
            assert flag not in options, f"{command} --{flag} is listed as not applicable: remove it from the table"
            continue
        assert flag in options, f"noisykd {command} has no --{flag}"
        seen[command] = describe(options[flag])
    assert len(set(seen.values())) == 1, f"--{flag} differs between commands: {seen}"
    # ... and it is the shared declaration, not a copy that happens to agree today
    names = seen[next(iter(seen))][0]
    declared = DECLARED[flag]
    assert set(names) == {d for d in declared.param_decls if d.startswith("-")}
    assert seen[next(iter(seen))][4] == declared.help


def test_short_forms():
    for command in COMMANDS:
        options = options_of(command)
        assert "-s" in options["set"].opts
        if (command, "out") not in NOT_APPLICABLE:
            assert "-o" in options["out"].opts


def test_not_applicable_table_names_real_commands_and_flags():
    for command, flag in NOT_APPLICABLE:
        assert command in COMMANDS and flag in SHARED


def test_shared_flags_parse_in_every_command():
    """The flags reach each command's function (the command is stopped before anything trains)."""
    argv = {"train": ["train", "--print-config"],
            "detect": ["detect", "RUNDIR"],
            "compare": ["compare", "--methods", "ce"],
            "demo": ["demo"],
            "reproduce": ["reproduce", "digits/sym40"]}
    for command in COMMANDS:
        received = {}
        group = typer.main.get_command(app)  # a fresh click group: replacing its callback touches nothing else
        group.commands[command].callback = lambda **kwargs: received.update(kwargs)
        args = argv[command] + ["--epochs", "20", "--threads", "2", "--device", "cpu", "--seed", "3",
                                "-s", "optim.lr=0.1"]
        if (command, "out") not in NOT_APPLICABLE:
            args += ["-o", "somewhere"]
        group.main(args=args, prog_name="noisykd", standalone_mode=False)  # a usage error raises
        assert received["epochs"] == 20 and received["threads"] == 2 and received["device"] == "cpu", command
        assert received["seed"] == 3 and list(received["overrides"]) == ["optim.lr=0.1"], command
        if (command, "out") not in NOT_APPLICABLE:
            assert str(received["out"]) == "somewhere", command


def test_detect_takes_epochs_and_threads():
    """The reported failure: ``detect --epochs 20`` was "No such option"."""
    result = CliRunner().invoke(app, ["detect", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--epochs" in result.output and "--threads" in result.output


def test_compare_and_reproduce_seed_is_the_first_of_seeds(monkeypatch, tmp_path):
    """--seed S with --seeds N runs S .. S+N-1 (run_seeds takes any sequence of seeds)."""
    import noisykd.reproduce as reproduce

    asked = []

    def fake_run_seeds(setting, seeds, out, on_seed=None):
        asked.append(list(seeds))
        return []

    monkeypatch.setattr(reproduce, "run_seeds", fake_run_seeds)
    monkeypatch.setattr(reproduce.Report, "add", lambda self, setting, runs: {})
    monkeypatch.setattr(reproduce.Report, "write", lambda self, out, with_paper: "| table |")
    result = CliRunner().invoke(app, ["compare", "--methods", "ce", "--seeds", "3", "--seed", "5", "--epochs", "1",
                                      "--out", str(tmp_path / "c")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["reproduce", "digits/sym40", "--seeds", "2", "--seed", "7", "--out",
                                      str(tmp_path / "r")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert asked == [[5, 6, 7], [7, 8]]


def test_reproduce_epochs_is_marked_as_not_the_papers(monkeypatch, tmp_path):
    import noisykd.reproduce as reproduce

    settings = []
    monkeypatch.setattr(reproduce, "run_seeds", lambda setting, seeds, out, on_seed=None: settings.append(setting)
                        or [])
    monkeypatch.setattr(reproduce.Report, "add", lambda self, setting, runs: {})
    monkeypatch.setattr(reproduce.Report, "write", lambda self, out, with_paper: "| table |")
    result = CliRunner().invoke(app, ["reproduce", "digits/sym40", "--seeds", "1", "--epochs", "3", "--threads", "1",
                                      "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (setting,) = settings
    assert setting.config["optim"]["epochs"] == 3 and setting.config["threads"] == 1
    assert setting.shortened and setting.changes == ("3 epochs",)  # threads change no result
    both = CliRunner().invoke(app, ["reproduce", "digits/sym40", "--epochs", "3", "--epochs-scale", "0.5",
                                    "--out", str(tmp_path)])
    assert both.exit_code == 2 and "give one of them" in words(both.output)
    clash = CliRunner().invoke(app, ["reproduce", "digits/sym40", "--epochs", "3", "--set", "optim.epochs=4",
                                     "--out", str(tmp_path)])
    assert clash.exit_code == 2 and "contradicts --epochs 3" in words(clash.output)


def test_reproduce_passes_the_shared_flags_to_a_suite(monkeypatch, tmp_path):
    import noisykd.reproduce as reproduce

    asked = {}

    def fake_run_suite(name, out, **kwargs):
        asked.update(kwargs, name=name, out=out)
        return reproduce.Report("suite", kwargs["command"])

    monkeypatch.setattr(reproduce, "run_suite", fake_run_suite)
    result = CliRunner().invoke(app, ["reproduce", "digits", "--seed", "2", "--epochs", "3", "--threads", "1",
                                      "--device", "cpu", "-s", "optim.lr=0.1", "-o", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert asked["name"] == "digits" and asked["seeds"] is None and asked["first_seed"] == 2  # the suite's seeds
    assert (asked["epochs"], asked["threads"], asked["device"], asked["overrides"]) == (3, 1, "cpu", ["optim.lr=0.1"])
    mixed = CliRunner().invoke(app, ["reproduce", "digits", "digits/sym40", "-o", str(tmp_path)])
    assert mixed.exit_code == 2 and "a suite runs on its own" in words(mixed.output)
