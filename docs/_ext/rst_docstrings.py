"""A griffe extension that turns noisykd's reST-flavoured docstrings into the Markdown mkdocstrings renders.

noisykd's docstrings are written for reading in the source and with ``help()``: Sphinx roles
(:func:`find_label_issues`), ``::`` literal blocks and aligned ``name:   description`` field lists. Rendered as
Markdown as they are, the roles show as literal ``:func:`` text, the literal blocks run into the paragraph above
and the field lists into one line. This extension rewrites each docstring once the package is loaded (so that
every name can be resolved), changing nothing in the source:

* ``:role:`name``` (and ``:role:`~a.b.name``` or ``:role:`title <target>```) becomes a code span that links to
  the object's API entry when the name resolves and that entry is rendered; otherwise it stays a plain code span
  (an optional cross-reference, so an unrendered target is never a broken link).
* a paragraph ending in ``::`` keeps one colon and its indented block becomes a fenced code block (Python when it
  parses as Python, plain text otherwise).
* a run of ``name:  description`` lines (two or more spaces after the colon, or several such lines in a row;
  continuation lines indented further) becomes a bullet list with the names as code.

mkdocs.yml loads it by path (``extensions: [docs/_ext/rst_docstrings.py]``, relative to mkdocs.yml).
"""

from __future__ import annotations

import ast
import html
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`([^`]+)`")
FIELD = re.compile(r"^(\s*)([A-Za-z_][A-Za-z_0-9.]*(?:, [A-Za-z_][A-Za-z_0-9.]*)*):(\s+)(\S.*)$")


def _indent(line: str) -> int:
    """Number of leading spaces of ``line``."""
    return len(line) - len(line.lstrip(" "))


def _target(obj: griffe.Object, text: str) -> tuple[str, str]:
    """(shown name, full path or "") of one role's text, resolved in ``obj``'s scope."""
    explicit = re.fullmatch(r"(.*?)\s*<([^>]+)>", text)
    if explicit:
        title, name = explicit.group(1), explicit.group(2)
    else:
        name = text
        title = text[1:].rsplit(".", 1)[-1] if text.startswith("~") else text
    name = name.lstrip("~.")
    if name.startswith("noisykd."):
        return title, name
    head, _, rest = name.partition(".")
    try:
        base = obj.resolve(head)
    except (griffe.NameResolutionError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return title, ""
    return title, f"{base}.{rest}" if rest else base


def _roles(obj: griffe.Object, text: str) -> str:
    """``text`` with every Sphinx role replaced by an optional cross-reference to its target."""

    def replace(match: re.Match) -> str:
        title, path = _target(obj, match.group(1))
        code = f"<code>{html.escape(title)}</code>"
        if not path:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return ROLE.sub(replace, text)


def _literal_blocks(lines: list[str]) -> list[str]:
    """``lines`` with each ``::`` paragraph's indented block turned into a fenced code block."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        stripped = line.rstrip()[:-1]
        base = _indent(line)
        if stripped.strip() != ":":
            out.append(stripped)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block_end = j
        while block_end < len(lines) and (not lines[block_end].strip() or _indent(lines[block_end]) > base):
            block_end += 1
        while block_end > j and not lines[block_end - 1].strip():
            block_end -= 1
        code = textwrap.dedent("\n".join(lines[j:block_end]))
        try:
            ast.parse(code)
            language = "python"
        except SyntaxError:
            language = "text"
        out += ["", f"```{language}", *code.splitlines(), "```", ""]
        i = block_end
    return out


def _field(line: str) -> tuple[int, str, str] | None:
    """(indent, name(s), description) of a ``name: description`` line, else None."""
    match = FIELD.match(line)
    if not match:
        return None
    return len(match.group(1)), match.group(2), match.group(4)


def _next_item(lines: list[str], i: int, base: int) -> int:
    """Index of the first line after ``lines[i]`` that is not one of its continuation lines (indented deeper)."""
    i += 1
    while i < len(lines) and lines[i].strip() and _indent(lines[i]) > base:
        i += 1
    return i


def _field_lists(lines: list[str]) -> list[str]:
    """``lines`` with each run of ``name: description`` lines turned into a Markdown bullet list.

    A field is ``name: description`` or ``name, other: description``. A run starts at a field with two or more
    spaces after its colon, or at one followed by another field at the same indentation (after its own
    continuation lines); it goes on while the fields keep that indentation.
    """
    out: list[str] = []
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        field = None if in_fence else _field(line)
        if field:
            base = field[0]
            following = _field(lines[j]) if (j := _next_item(lines, i, base)) < len(lines) else None
            if not (FIELD.match(line).group(3).startswith("  ") or (following and following[0] == base)):
                field = None
        if not field:
            out.append(line)
            i += 1
            continue
        base = field[0]
        if out and out[-1].strip():
            out.append("")
        while field:
            _, name, description = field
            names = ", ".join(f"`{part}`" for part in name.split(", "))
            out.append(f"{' ' * base}- {names}: {description}")
            end = _next_item(lines, i, base)
            out += [" " * (base + 2) + lines[k].strip() for k in range(i + 1, end)]
            i = end
            field = _field(lines[i]) if i < len(lines) else None
            if field and field[0] != base:
                field = None
        out.append("")
    return out


def to_markdown(obj: griffe.Object, docstring: str) -> str:
    """The Markdown of one docstring (already dedented by griffe)."""
    lines = _literal_blocks(docstring.splitlines())
    lines = _field_lists(lines)
    text = "\n".join(lines)
    # roles outside fenced blocks only: a code example keeps its text as written
    parts = re.split(r"(```.*?```)", text, flags=re.DOTALL)
    return "".join(part if part.startswith("```") else _roles(obj, part) for part in parts)


class RstDocstrings(griffe.Extension):
    """Rewrites every docstring of the loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Walk the fully loaded package once; aliases share their target's docstring, so skip them."""
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj, obj.docstring.value)
            stack += [member for member in obj.members.values() if not member.is_alias]
