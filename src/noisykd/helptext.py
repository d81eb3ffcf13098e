"""Docstrings as terminal prose: what ``noisykd --help``, ``noisykd methods`` and ``noisykd models`` print.

Docstrings here are written for the source reader (reStructuredText roles, double backticks, hanging-indent
argument lists); a user at a terminal should read plain sentences. Everything the command line shows from a
docstring goes through this module:

* :func:`plain`: reST markup stripped, each paragraph one line (lists keep one line per item);
* :func:`first_sentence`: the complete first sentence of a text, for one-line listings;
* :func:`argument_help`: ``{name: meaning}`` from the ``name: meaning`` entries of docstrings;
* :func:`elide_middle`: a path shortened in its middle, keeping its file name, to fit a table column.
"""

from __future__ import annotations

import re

__all__ = ["plain", "inline", "first_sentence", "argument_help", "without_arguments", "elide_middle", "ELLIPSIS"]

#: What stands for the left-out part of an elided path.
ELLIPSIS = "…"

# :role:`target`, :domain:role:`target`, with an optional explicit title: :class:`title <target>`
_ROLE = re.compile(r":(?:[A-Za-z]+:)?(?P<role>[A-Za-z]+):`(?P<body>[^`]+)`")
# `text <https://...>`_ (a hyperlink) and `text`_ (a reference)
_LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>[^`>]+)>`_{1,2}")
_REFERENCE = re.compile(r"`(?P<text>[^`]+)`_{1,2}")
_LITERAL = re.compile(r"``(?P<body>.+?)``")
_INTERPRETED = re.compile(r"(?<![`\w])`(?P<body>[^`]+)`(?![`\w])")
_STRONG = re.compile(r"(?<![\w*])\*\*(?P<body>\S(?:[^*]*?\S)?)\*\*(?![\w*])")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?P<body>\S(?:[^*]*?\S)?)\*(?![\w*])")
# A list item: a bullet, or an enumerator such as "1." / "(a)".
_ITEM = re.compile(r"^(?:[*\-•+]\s|\d+[.)]\s|\([a-z0-9]\)\s)")
#: Roles whose target is called: shown with "()" (``:func:`f``` -> ``f()``).
_CALLABLE_ROLES = frozenset({"func", "meth"})
# Abbreviations after which a period does not end a sentence ("Eq. 5", "et al. 2015", "e.g. this").
_ABBREVIATIONS = frozenset({"al", "e.g", "i.e", "cf", "vs", "etc", "eq", "eqs", "fig", "figs", "sec", "no", "approx",
                            "resp", "cl", "ca", "dr", "mr", "ms", "st", "alg", "tab", "ref", "refs", "ch", "vol"})
_SENTENCE_END = re.compile(r"[.!?][)\"'”’]*(?=\s+[\"'“(\[]*[A-Z0-9])")


def _role(match: re.Match) -> str:
    """One reST role as plain text: its title when it has one, else its target (``~`` keeps the last part)."""
    role, body = match["role"], match["body"].strip()
    titled = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body)
    if titled:
        return titled["title"]
    if body.startswith("~"):
        body = body[1:].rsplit(".", 1)[-1]
    if role in _CALLABLE_ROLES and not body.endswith(")"):
        body += "()"
    return body


def inline(text: str) -> str:
    """Inline reST markup of ``text`` as plain text: roles, literals, links, emphasis; nothing else changes."""
    text = _ROLE.sub(_role, text)
    text = _LINK.sub(lambda m: f"{m['text']} ({m['url']})", text)
    text = _LITERAL.sub(lambda m: m["body"], text)
    text = _REFERENCE.sub(lambda m: m["text"], text)
    text = _INTERPRETED.sub(lambda m: m["body"], text)
    text = _STRONG.sub(lambda m: m["body"], text)
    return _EMPHASIS.sub(lambda m: m["body"], text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _dedent(text: str) -> list[str]:
    """The lines of a docstring without its common indentation (the first line counts as unindented)."""
    lines = text.expandtabs().splitlines()
    rest = [line for line in lines[1:] if line.strip()]
    margin = min((_indent(line) for line in rest), default=0)
    out = [lines[0].strip()] if lines else []
    out += [line[margin:].rstrip() for line in lines[1:]]
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return out


def _paragraphs(text: str) -> list[list[str]]:
    """Blank-line separated blocks of dedented lines."""
    blocks: list[list[str]] = [[]]
    for line in _dedent(text):
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def _logical_lines(block: list[str]) -> list[str]:
    """A paragraph's lines joined into what a reader sees as one line each.

    Prose (every line at the same indentation) becomes one line. A paragraph with hanging indentation (an
    argument list, a bulleted list) keeps one line per entry: a line at the paragraph's own indentation starts
    an entry, a more indented one continues it. A list item always starts a new line.
    """
    base = _indent(block[0])
    hanging = any(_indent(line) > base for line in block[1:])
    out: list[str] = []
    for line in block:
        starts = not out or _ITEM.match(line.lstrip()) or (hanging and _indent(line) <= base)
        if starts:
            out.append(line.strip())
        else:
            out[-1] += " " + line.strip()
    return [re.sub(r"\s{2,}", " ", line) for line in out]  # the source's column alignment means nothing joined


def plain(text: str | None) -> str:
    """A docstring (reStructuredText) as plain terminal prose.

    Roles become their text (``:class:`~a.B``` -> ``B``, ``:func:`f``` -> ``f()``, ``:data:`X``` -> ``X``),
    double backticks are dropped (````x```` -> ``x``), links become ``text (url)``, emphasis markers go,
    ``::`` ends as ``:``. Paragraphs stay apart (one blank line); within one, lines are joined into one line
    (argument and bulleted lists: one line per entry), so that the terminal wraps them to its width. A literal
    block (the indented lines after a ``::`` paragraph) is kept line for line. Empty or None -> "".
    """
    if not text or not text.strip():
        return ""
    out: list[str] = []
    literal = False
    for block in _paragraphs(text):
        if literal and _indent(block[0]) > 0:  # the example after "...::" stays as written
            out.append("\n".join(block))
            continue
        literal = False
        lines = _logical_lines(block)
        if lines[-1].endswith("::"):
            literal = True
            lines[-1] = lines[-1][:-2].rstrip()
            lines[-1] = lines[-1] + ":" if lines[-1] and not lines[-1].endswith(":") else lines[-1]
        text_block = "\n".join(inline(line) for line in lines if line)
        if text_block:
            out.append(text_block)
    return "\n\n".join(out)


def first_sentence(text: str | None) -> str:
    """The complete first sentence of ``text`` (a docstring or plain prose), as one plain line.

    It is the first paragraph up to the first period, ``!`` or ``?`` that is followed by a new sentence (a
    capital letter or a digit after white space) and does not end an abbreviation ("Eq. 5", "et al. 2015",
    "e.g. X"); the whole first paragraph when there is no such end. Never cut inside a sentence.
    """
    paragraph = plain(text).split("\n\n", 1)[0].replace("\n", " ").strip()
    for match in _SENTENCE_END.finditer(paragraph):
        end = match.start()
        word = re.search(r"([\w.]+)$", paragraph[:end])
        token = word[1].lower() if word else ""
        if paragraph[end] == "." and (token in _ABBREVIATIONS or len(token) == 1 or token.replace(".", "").isdigit()
                                      and not paragraph[end + 1:].lstrip()[:1].isupper()):
            continue  # "Eq. 5", "J. Smith", "Table 2. 3" ... do not end a sentence
        return paragraph[:match.end()].strip()
    return paragraph


# "name: meaning", "name (default): meaning", "a, b, c: meaning" at the start of a (dedented) line
_ENTRY = re.compile(r"^(?P<names>[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)(?:\s+\((?P<default>[^)]*(?:\([^)]*\)[^)]*)*)\))?"
                    r":\s+(?P<meaning>\S.*)$")


def _entries(block: list[str], names: set[str]) -> list[tuple[tuple[str, ...], str]] | None:
    """The ``name: meaning`` entries of one paragraph when it is made only of entries naming known ``names``
    (None when it is prose). An entry starts at the paragraph's indentation; deeper lines continue it."""
    base = _indent(block[0])
    found: list[tuple[tuple[str, ...], list[str]]] = []
    for line in block:
        match = _ENTRY.match(line.strip()) if _indent(line) <= base else None
        if match is not None:
            entry_names = tuple(n.strip() for n in match["names"].split(","))
            if not set(entry_names) <= names:
                return None
            found.append((entry_names, [match["meaning"].strip()]))
        elif found and _indent(line) > base:
            found[-1][1].append(line.strip())
        else:
            return None
    return [(entry_names, " ".join(words)) for entry_names, words in found]


def without_arguments(text: str | None, names) -> str:
    """``text`` (a docstring, dedented) without its paragraphs that are argument lists of ``names`` only (see
    :func:`argument_help`): for a listing that prints those arguments apart, with their defaults."""
    wanted = set(names)
    return "\n\n".join("\n".join(block) for block in _paragraphs(text or "") if not _entries(block, wanted))


def argument_help(texts, names) -> dict[tuple[str, ...], str]:
    """``{(name, ...): meaning}`` for the arguments ``names`` documented in ``texts`` (docstrings).

    An argument is documented by an entry at the start of a line of a paragraph made only of such entries::

        name:        meaning, continued on lines indented
                     deeper than the entry
        other (3):   a default in parentheses is allowed (the listing shows the real one)
        a, b, c:     one meaning shared by three arguments

    Entries naming anything but ``names`` make the paragraph prose (not read). The first text that documents
    a name wins (pass the most specific docstring first); the meanings are plain text (:func:`plain`).
    """
    wanted = set(names)
    found: dict[tuple[str, ...], str] = {}
    seen: set[str] = set()
    for text in texts:
        for block in _paragraphs(text or ""):
            for entry_names, meaning in _entries(block, wanted) or []:
                fresh = tuple(n for n in entry_names if n not in seen)
                if fresh:
                    found[fresh] = inline(meaning)
                    seen.update(fresh)
    return found


def elide_middle(path: str, width: int, sep: str = "/") -> str:
    """``path`` shortened to at most ``width`` characters by leaving out folders in its middle, e.g.
    ``photos/train/Pullover/img_0012.png`` -> ``photos/…/Pullover/img_0012.png``.

    The file name is kept whole whenever ``width`` allows ``…/NAME``; the folders next to it and the first
    folder are kept as far as they fit (the nearest folder first: it is often the class). Only when even the
    file name does not fit with ``…/`` is the name shown alone, and only when the name alone does not fit is it
    cut in its middle, keeping its start and its extension. A path that fits is returned unchanged.
    """
    if width < 1:
        raise ValueError(f"elide_middle: width must be >= 1, got {width}")
    if len(path) <= width:
        return path
    parts = path.split(sep)
    name, folders = parts[-1], parts[:-1]
    head: list[str] = []
    if folders:  # an absolute path keeps its root with the first folder: "/tmp/…/name"
        head = folders[:2] if folders[0] == "" and len(folders) > 1 else folders[:1]
        folders = folders[len(head):]
    if len(ELLIPSIS) + len(sep) + len(name) > width:
        if len(name) <= width:  # room for the file name alone: it is what matters
            return name
        # the name alone is too long: cut it in its middle
        stem, dot, extension = name.rpartition(".")
        keep_end = (dot + extension) if dot and len(dot + extension) < width - 2 else ""
        room = width - len(ELLIPSIS) - len(keep_end)
        if room < 1:
            return (ELLIPSIS + name[-(width - 1):]) if width > 1 else ELLIPSIS
        base = stem if keep_end else name
        front, back = (room + 1) // 2, room // 2
        return base[:front] + ELLIPSIS + (base[len(base) - back:] if back else "") + keep_end

    def shown(start: list[str]) -> tuple[int, str]:
        """(folders kept, path) keeping ``start`` and as many folders next to the file as fit."""
        tail = [name]
        for folder in reversed(folders):
            if len(sep.join([*start, ELLIPSIS, folder, *tail])) > width:
                break
            tail.insert(0, folder)
        text = sep.join([*start, ELLIPSIS, *tail])
        return (len(tail) - 1 + len(start), text) if len(text) <= width else (-1, text)  # (-1: too long)

    (kept, with_head), (kept_without, without) = shown(head), shown([])
    # the path's start with the folder next to the file (often its class); that folder rather than the start
    # when both do not fit
    return with_head if kept >= 0 and (kept - len(head) >= 1 or kept_without < 1) else without
