"""Free text on its way into generated code: the one module that escapes it.

Names of placeholders and parameters, scopes, labels, source locations and graph names are
free text: a user may call an input ``'my input (v2)'``, and a file may hold any string there
(``gc.load`` keeps them as they are). Backends and passes generate code and files from them —
the NumPy backend's Python program (code and comments), the LLVM and PTX modules' names, the
pass-dump folders. Every such string goes through this module and nowhere else, so one place
decides what can reach generated source:

* `source_text` for text that is *shown* (a comment, a string literal, a file name handed to
  Python's ``compile``): printable ASCII only, everything else backslash-escaped, so the result
  can never end a comment line, close a quoted string or carry an invisible character;
* `identifier` for text that becomes a *name* (a Python variable, an LLVM value or function,
  a folder): a ``[A-Za-z_][A-Za-z0-9_]*`` token built from `source_text`'s output;
* `is_identifier` for names that must already *be* such a token (dimension names: a
  symbolic shape's names are code in every backend, so they are checked, not escaped).
"""

from __future__ import annotations

import keyword
import re

__all__ = ["MAX_IDENTIFIER", "IDENTIFIER", "source_text", "identifier", "is_identifier"]

#: The longest name `identifier` makes and `is_identifier` accepts.
MAX_IDENTIFIER = 64

#: The grammar of a name that is code: an ASCII Python identifier.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\", "'", '"'}


def _escape(c: str) -> str:
    if c in "\\'\"":
        return "\\" + c
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def source_text(text: object, max_length: int | None = None) -> str:
    """`text` (any object, shown by ``str``) as printable ASCII that is safe anywhere inside a
    line of generated source: characters U+0020..U+007E are kept except the backslash and the
    quotes, which are escaped (``\\\\``, ``\\'``, ``\\"``); anything else — newlines, carriage
    returns, NUL, tabs, unicode line separators, non-ASCII letters — becomes ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN``. The result therefore cannot end a comment line nor close a
    quoted string, in Python or LLVM IR. With `max_length`, longer results are cut (never
    inside an escape) and end with ``...``.

    Use it for text that is shown in generated code (comments, ``compile``'s file name).
    """
    out: list[str] = []
    size = 0
    for c in str(text):
        piece = c if c in _PLAIN else _escape(c)
        if max_length is not None and size + len(piece) > max_length:
            out.append("...")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def terminal_text(text: object) -> str:
    """`text` with every character a terminal would act on rather than show — control
    characters (ESC, BEL, CR, NUL), format characters (a right-to-left override) and line or
    paragraph separators — written as ``\\xNN`` / ``\\uNNNN``; newlines are kept, and so is
    every printable character of any script. For names a file supplies, printed by the CLI:
    a model must not retitle, clear or overwrite the user's screen."""
    return "".join(c if c == "\n" or c.isprintable() else _escape(c) for c in str(text))


def identifier(text: object, *, extra: str = "", reserved: frozenset[str] | set[str] = frozenset(),
               default: str = "v", max_length: int = MAX_IDENTIFIER) -> str:
    """A name made from free text: ``[A-Za-z_][A-Za-z0-9_]*`` (plus the characters of
    `extra`, e.g. ``"."`` for LLVM names or ``"-"`` for folders), at most `max_length`
    characters, never a Python keyword nor one of `reserved` (those, and names that would
    start with a digit, get a ``v_`` prefix). Characters outside the grammar become ``_``
    after `source_text` escaped them, so ``"größe"`` gives ``gr_xf6_xdfe``. Empty text gives
    `default`. Not unique: callers that need distinct names add a suffix.
    """
    allowed = re.escape("".join(c for c in extra if c.isascii() and c.isprintable()))
    name = re.sub(rf"[^A-Za-z0-9_{allowed}]", "_", source_text(text, max_length))
    if not name:
        name = default
    if not (name[0].isalpha() or name[0] == "_") or keyword.iskeyword(name) \
            or name in reserved:
        name = "v_" + name
    return name[:max_length]


def is_identifier(text: object, max_length: int = MAX_IDENTIFIER) -> bool:
    """True when `text` is a str that is already a name: ``[A-Za-z_][A-Za-z0-9_]*`` (ASCII)
    of at most `max_length` characters. Dimension names must be (gc.placeholder checks it, and
    gc.load checks every name a file gives a symbolic dimension)."""
    return isinstance(text, str) and len(text) <= max_length and \
        IDENTIFIER.fullmatch(text) is not None
