"""Help reads as prose: no raw reStructuredText, no placeholders, no sentence cut, every method argument explained.

The converter (noisykd.helptext) is tested on hand-written inputs first; then every ``--help`` of every command
and subcommand, every ``noisykd methods NAME`` / ``noisykd models NAME`` and both tables are scanned.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer
from typer.testing import CliRunner

from noisykd.cli import app, entry_options, option_help
from noisykd.helptext import ELLIPSIS, argument_help, elide_middle, first_sentence, plain, without_arguments
from noisykd.methods import METHODS
from noisykd.models import MODELS

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def builtin(registry) -> list[str]:
    """The entries noisykd ships (other test modules register toy methods of their own while they run)."""
    return [n for n in registry.names() if registry[n].__module__.startswith("noisykd.")]

#: Markup a reader must never see: reST roles and literals, typer's {arg} usage placeholders, flag metavars.
RAW_MARKUP = re.compile(r"``|:(?:class|func|meth|attr|data|mod|obj|exc|ref|py:\w+):`|\{[A-Za-z_]\w*\}|<bool>")
#: How a complete sentence ends: a full stop, ! or ?, possibly inside a closing bracket or quote.
SENTENCE_END = re.compile(r"[.!?][)\]\"'”]*$|\)$")


def invoke(*args: str, env=WIDE):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def words(text: str) -> str:
    """Output as one line of words (table borders and line breaks left out)."""
    return " ".join(re.sub(r"[│┃║]", " ", text).split())


# ------------------------------------------------------------------------------------------------------------
# the converter, on hand-written input

def test_plain_strips_roles_and_literals():
    assert plain("Use :class:`~noisykd.methods.bkd.BKDArgs` and :class:`Method`.") == "Use BKDArgs and Method."
    assert plain(":func:`find_label_issues` and :meth:`Registry.describe` and :func:`f()`") == \
        "find_label_issues() and Registry.describe() and f()"
    assert plain(":data:`DEMO_EPOCHS`, :attr:`x.y`, :mod:`noisykd.cli`, :py:class:`A`") == \
        "DEMO_EPOCHS, x.y, noisykd.cli, A"
    assert plain("``--set method_args.k=3`` sets ``k``") == "--set method_args.k=3 sets k"
    assert plain(":class:`the args <noisykd.methods.bkd.BKDArgs>`") == "the args"
    assert plain("see `the paper <https://x.org/p>`_ and `this`_") == "see the paper (https://x.org/p) and this"
    assert plain("the *fitting epoch* and **teacher**, but beta * p * q stays") == \
        "the fitting epoch and teacher, but beta * p * q stays"


def test_plain_joins_lines_and_keeps_paragraphs_lists_and_examples():
    text = """First line
    goes on here.

    Second paragraph
    of two lines.

    * a bullet
      continued
    * another

    k (2):      half window
                of the detector.
    q:          exponent.

    For example::

        MODELS["small_cnn"]
          indented more
    """
    assert plain(text) == ("First line goes on here.\n\nSecond paragraph of two lines.\n\n"
                           "* a bullet continued\n* another\n\nk (2): half window of the detector.\nq: exponent.\n\n"
                           "For example:\n\n    MODELS[\"small_cnn\"]\n      indented more")
    assert plain(None) == "" and plain("   ") == ""


def test_first_sentence_is_whole_and_never_cut():
    wrapped = """One network with Mconf self label correction: trust in the prediction grows with the model's overall
    certainty on the previous epoch (CMD Eq. 6-7). More text follows."""
    assert first_sentence(wrapped) == ("One network with Mconf self label correction: trust in the prediction grows "
                                       "with the model's overall certainty on the previous epoch (CMD Eq. 6-7).")
    assert first_sentence("Reed et al. 2015 use Eq. 5 here, e.g. Boot. Next one.") == \
        "Reed et al. 2015 use Eq. 5 here, e.g. Boot."
    assert first_sentence("Widths (10 cl.). Then more.") == "Widths (10 cl.)."
    assert first_sentence("No full stop in this summary") == "No full stop in this summary"
    assert first_sentence("Uses :func:`f` on ``x``.\n\nSecond paragraph.") == "Uses f() on x."


def test_argument_help_reads_entries_groups_and_hanging_lines():
    doc = """Arguments of something.

    k (2):      half window of
                the detector.
    a, b:       two weights.
    other:      not an argument here.
    """
    # a paragraph naming anything but arguments is prose: not read
    assert argument_help([doc], ["k", "a", "b"]) == {}
    doc = doc.replace("    other:      not an argument here.\n", "")
    assert argument_help([doc], ["k", "a", "b"]) == {("k",): "half window of the detector.", ("a", "b"): "two weights."}
    assert without_arguments(doc, ["k", "a", "b"]) == "Arguments of something."
    # the first docstring that documents a name wins; meanings are plain text
    assert argument_help(["k: from ``here``.", "k: not from here.\nq: from the second."], ["k", "q"]) == \
        {("k",): "from here.", ("q",): "from the second."}


def test_elide_middle_keeps_the_file_name():
    path = "photos/train/Pullover/img_0012.png"
    assert elide_middle(path, 80) == path
    assert elide_middle(path, 30) == f"photos/{ELLIPSIS}/Pullover/img_0012.png"
    assert elide_middle(path, 20) == f"{ELLIPSIS}/img_0012.png"
    assert elide_middle(path, 13) == "img_0012.png"  # no room for "…/": the name alone
    assert elide_middle("/tmp/a/b/c/d/Ankle boot/img_1.png", 30) == f"/tmp/{ELLIPSIS}/d/Ankle boot/img_1.png"
    short = elide_middle("x/a_very_long_file_name_indeed.png", 14)
    assert len(short) <= 14 and short.endswith(".png") and ELLIPSIS in short  # only then is the name cut
    for width in range(1, 40):
        assert len(elide_middle(path, width)) <= width
    with pytest.raises(ValueError):
        elide_middle(path, 0)


# ------------------------------------------------------------------------------------------------------------
# every help text of the command line

def command_paths(command, path=()):
    yield list(path)
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


HELP_PATHS = list(command_paths(typer.main.get_command(app)))


def test_every_command_is_walked():
    names = {" ".join(p) for p in HELP_PATHS}
    assert {"", "train", "detect", "compare", "demo", "reproduce", "data", "data info", "methods"} <= names


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda p: " ".join(p) or "noisykd")
def test_help_is_prose(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    found = RAW_MARKUP.findall(result.output)
    assert not found, f"noisykd {' '.join(path)} --help shows {found}:\n{result.output}"
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage


def test_arguments_read_as_their_names_in_usage():
    assert re.search(r"Usage: \S+ detect \[OPTIONS\] RUN\b", invoke("detect", "--help").output)
    assert re.search(r"Usage: \S+ reproduce \[OPTIONS\] \[NAMES\]\.\.\.", invoke("reproduce", "--help").output)
    assert re.search(r"Usage: \S+ methods \[OPTIONS\] \[NAME\]", invoke("methods", "--help").output)


def test_the_commands_list_shows_whole_first_sentences():
    """Each command's line in ``noisykd --help`` is the first sentence of its docstring, as written there."""
    text = words(invoke("--help").output)
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        if name == "data":
            continue
        sentence = first_sentence(command.callback.__doc__)
        assert SENTENCE_END.search(sentence), (name, sentence)
        assert sentence in text, (name, sentence)


# ------------------------------------------------------------------------------------------------------------
# methods and models

@pytest.mark.parametrize("registry, command", [(METHODS, "methods"), (MODELS, "models")], ids=["methods", "models"])
def test_tables_show_complete_first_sentences(registry, command):
    result = invoke(command)
    assert result.exit_code == 0 and not RAW_MARKUP.findall(result.output), result.output
    shown = table_cells(result.output)
    assert set(shown) == set(registry.names())
    for name in builtin(registry):
        summary = registry.describe(name).summary
        assert summary and SENTENCE_END.search(summary), f"{name}: summary cut or unfinished: {summary!r}"
        assert not RAW_MARKUP.findall(summary)
        assert shown[name][0] == summary, f"{name}: {summary!r} not shown whole"
        assert shown[name][1] == (", ".join(entry_options(registry, name)) or "-")


def table_cells(output: str) -> dict[str, list[str]]:
    """A rich table's rows as ``{first cell: [other cells]}``, each cell's wrapped lines joined again."""
    rows: dict[str, list[list[str]]] = {}
    name = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0]:
            name = cells[0]
            rows[name] = [[] for _ in cells[1:]]
        for column, cell in zip(rows[name], cells[1:]):
            if cell:
                column.append(cell)
    return {n: [" ".join(parts) for parts in columns] for n, columns in rows.items()}


def test_the_cut_mconf_summary_is_whole_now():
    summary = METHODS.describe("mconf").summary
    assert "grows with the model's overall certainty" in summary and summary.endswith(".")
    assert table_cells(invoke("methods", env={"COLUMNS": "80"}).output)["mconf"][0] == summary


def every_entry():
    return [(METHODS, "methods", n) for n in builtin(METHODS)] + [(MODELS, "models", n) for n in builtin(MODELS)]


@pytest.mark.parametrize("registry, command, name", every_entry(), ids=lambda x: x if isinstance(x, str) else "")
def test_each_entry_lists_every_option_with_default_and_meaning(registry, command, name):
    result = invoke(command, name)
    assert result.exit_code == 0, result.output
    assert not RAW_MARKUP.findall(result.output), result.output
    assert "(not described)" not in result.output, result.output
    for option, default in entry_options(registry, name).items():
        assert f"{option} = {default!r}" in result.output, f"{command} {name}: {option} missing"
    for defaults, meaning in option_help(registry, name):
        assert meaning and not RAW_MARKUP.findall(meaning), (name, defaults)
        assert meaning in words(result.output), (name, defaults)


@pytest.mark.parametrize("name", [n for n in builtin(METHODS)
                                  if dataclasses.is_dataclass(getattr(METHODS[n], "Args", None))])
def test_every_field_of_a_methods_args_dataclass_is_listed(name):
    output = invoke("methods", name).output
    for f in dataclasses.fields(METHODS[name].Args):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert f"{f.name} = {default!r}" in output, f"{name}: {f.name}"


def test_gjs_lists_all_its_arguments():
    """The reported gap: ``noisykd methods gjs`` showed only ``pis``."""
    output = invoke("methods", "gjs").output
    for option, default in {"pis": 0.5, "scale": True, "randaugment": "gjs", "one_batch": False,
                            "cutout_size": None}.items():
        assert f"{option} = {default!r}" in output
    assert "reduction" not in output  # refused by the method: the engine needs a batch mean


def test_loss_baselines_list_the_losses_other_keywords():
    assert "log_clamp = -4.0" in invoke("methods", "nce_rce").output
    assert "detach_prediction = True" in invoke("methods", "boot").output
    assert "proselflc_form = False" in invoke("methods", "cp").output
    assert "has no options" in invoke("methods", "ce").output


# ------------------------------------------------------------------------------------------------------------
# data info

def test_data_info_shows_one_train_column_without_noise():
    output = invoke("data", "info", "digits").output
    header = next(line for line in output.splitlines() if "class" in line and "test" in line)
    assert header.count("train") == 1
    assert "training labels: the data's own, no noise added" in output
    assert "{" not in output


def test_data_info_with_noise_names_both_train_columns_and_the_noise_in_words():
    output = invoke("data", "info", "digits", "--noise", "sym:0.4").output
    assert "train (data's labels)" in output and "train (training labels)" in output
    assert "training labels: the data's with sym:0.4 noise (symmetric, noise seed 0)" in output
    assert "{" not in output


def test_data_info_matrix_fits_a_narrow_terminal_without_cutting():
    """At 40 columns the matrix folds into blocks of columns; every value and class shows whole."""
    output = invoke("data", "info", "digits", "--noise", "sym:0.4", env={"COLUMNS": "40"}).output
    assert all(len(line) <= 40 for line in output.splitlines())
    assert "…" not in output  # nothing cut, the class table's headers neither (they fold)
    assert "columns 0-" in output and "of 10)" in output
    shown = {int(c) for line in output.splitlines() if line.startswith("clean class") for c in line.split()[2:]}
    assert shown == set(range(10))
