"""A generated module as a few modules that LLVM can compile at the same time.

LLVM spends most of a cold compile optimizing and emitting code function by function, and
llvmlite runs it on one thread. Cut into parts, the module compiles on several threads
(toolchain.jit): each part is a complete module of its own, whose functions that
another part calls are external there and declared where they are called. The machine code
is then linked in one engine.

The cut is a fixed rule of the module itself, never of the machine: the number of parts
follows the size of the IR (`part_count`), and the functions go to parts by their size in a
fixed order. The same program compiles to the same parts, and the same machine code, on a
machine with one core or sixteen; only how many parts compile at once differs.

What a part holds:

* the functions it owns (a kernel with the helpers only it calls: its thread parts and
  regions), with internal linkage unless another part calls them;
* a declaration of each function it calls that another part owns;
* every declaration, constant and external global of the module (unused ones cost nothing),
  and every inline helper (``alwaysinline``: the math functions) that it uses;
* all of the module's metadata.
"""

from __future__ import annotations

import re

from llvmlite import ir

#: IR bytes per part: below this a module is one part (a small program compiles in a few
#: milliseconds, and a part of its own costs a parse and a thread)
PART_BYTES = 40_000
#: the most parts a module is cut into
MAX_PARTS = 4

_REFERENCE = re.compile(r'@"((?:[^"\\]|\\.)*)"|@([-\w.$]+)')


def module_text(module: ir.Module, pieces: dict[str, str]) -> str:
    """The module as llvmlite prints it (``str(module)``), from its globals' texts."""
    return "\n".join(_header(module) + list(pieces.values()) + module._get_metadata_lines())


def global_texts(module: ir.Module) -> dict[str, str]:
    """Each global's text (function, declaration, variable), in the module's order."""
    return {name: str(g) for name, g in module.globals.items()}


def part_count(size: int) -> int:
    """How many parts a module of `size` bytes of IR is cut into (a rule of the size only)."""
    return max(1, min(MAX_PARTS, size // PART_BYTES))


def split(module: ir.Module, pieces: dict[str, str], parts: int, entry: str) -> list[str]:
    """`module` cut into `parts` module texts (just its text when `parts` is 1). `pieces`:
    global_texts(module); `entry`: the function the caller looks up (it stays in part 0)."""
    if parts <= 1 or _has_private_state(module):
        return [module_text(module, pieces)]
    functions = {name: g for name, g in module.globals.items()
                 if isinstance(g, ir.Function) and not g.is_declaration}
    inline = {name for name, fn in functions.items() if "alwaysinline" in fn.attributes}
    calls = {name: _references(pieces[name]) & functions.keys() for name in functions}
    owner = _assign(functions, inline, calls, pieces, parts, entry)
    present = []  # each part's functions: those it owns and the inline helpers they use
    for p in range(parts):
        own = {name for name, q in owner.items() if q == p}
        present.append(own | _inline_closure(own, inline, calls))
    # (what a part uses from another part: declared there, external in its own)
    used = [{callee for name in present[p] for callee in calls[name]
             if callee in owner and owner[callee] != p} for p in range(parts)]
    external = set().union(*used)
    texts = []
    for p in range(parts):
        lines = []
        for name in module.globals:
            text = pieces[name]
            if name not in functions:
                lines.append(text)  # declarations, constants, external globals
            elif name in present[p]:
                lines.append(_external(text) if name in external else text)
            elif name in used[p]:
                lines.append(_declaration(text))
        texts.append("\n".join(_header(module) + lines + module._get_metadata_lines()))
    return texts


def _has_private_state(module: ir.Module) -> bool:
    """A global variable that is not an internal constant nor a declaration of another
    module's: copied into every part it would be several variables, or one symbol defined
    several times, so such a module is not cut."""
    for g in module.globals.values():
        if not isinstance(g, ir.GlobalVariable):
            continue
        declared = g.linkage == "external" and g.initializer is None
        internal_constant = g.global_constant and g.linkage in ("internal", "private")
        if not (declared or internal_constant):
            return True
    return False


def _header(module: ir.Module) -> list[str]:
    return [f'; ModuleID = "{module.name}"', f'target triple = "{module.triple}"',
            f'target datalayout = "{module.data_layout}"', ""] + [
        it.get_declaration() for it in module.get_identified_types().values()]


def _references(text: str) -> set[str]:
    return {quoted or bare for quoted, bare in _REFERENCE.findall(text)}


def _assign(functions: dict, inline: set[str], calls: dict[str, set[str]],
            pieces: dict[str, str], parts: int, entry: str) -> dict[str, int]:
    """Which part owns each function that is not inline: groups of a function the entry calls
    and the helpers it alone reaches first, the largest group to the lightest part."""
    owner: dict[str, int] = {}
    groups: list[list[str]] = []
    claimed = {entry}
    order = {name: k for k, name in enumerate(functions)}
    for root in sorted(calls.get(entry, ()), key=order.__getitem__):
        if root in inline or root in claimed:
            continue
        group, todo = [], [root]
        while todo:
            name = todo.pop()
            if name in claimed or name in inline:
                continue
            claimed.add(name)
            group.append(name)
            todo.extend(sorted(calls[name]))
        groups.append(group)
    rest = [name for name in functions if name not in claimed and name not in inline]
    size = {name: _weight(name, pieces, inline) for name in functions}
    load = [0] * parts
    for name in [entry, *rest]:  # the entry, and what no kernel reaches (none, normally)
        if name in functions:
            owner[name] = 0
            load[0] += size[name]
    order = sorted(range(len(groups)), key=lambda g: (-sum(size[n] for n in groups[g]), g))
    for g in order:
        p = min(range(parts), key=lambda q: (load[q], q))
        for name in groups[g]:
            owner[name] = p
        load[p] += sum(size[n] for n in groups[g])
    return owner


#: LLVM's work on a function beyond its text, in bytes of IR: the vectorizer's analysis and
#: the code it emits for any loop (a one-line negation took about as long as a product's
#: 3 KB of IR to compile, bench/llvm_work.py)
FUNCTION_BYTES = 2000


def _weight(name: str, pieces: dict[str, str], inline: set[str]) -> int:
    """A function's share of LLVM's work, in bytes of IR: its own text with FUNCTION_BYTES,
    and an inline helper's weight at each of its calls (LLVM optimizes the helper's body
    once per call site: an exp, log or tanh inside a vectorized loop is several times the
    loop's own text). By text alone, the tiny MLP's two parts took 0.43 and 0.78 billion
    instructions of LLVM's work; weighed so, 0.56 and 0.65 (the cold compile waits for the
    larger). LeNet-5's and cnn32's four parts moved by 2% either way."""
    text = pieces[name]
    total = len(text) + FUNCTION_BYTES
    for helper in inline:
        if helper != name:
            total += text.count(f'@"{helper}"(') * _weight(helper, pieces, inline - {name})
    return total


def _inline_closure(own: list[str], inline: set[str], calls: dict[str, set[str]]) -> set[str]:
    """The inline helpers that the functions `own` use, directly or through each other."""
    needed: set[str] = set()
    todo = [callee for name in own for callee in calls[name] if callee in inline]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(c for c in calls[name] if c in inline)
    return needed


def _external(text: str) -> str:
    """A definition that another part calls: no longer internal."""
    head, sep, body = text.partition("\n")
    return head.replace("define internal ", "define ", 1) + sep + body


def _declaration(text: str) -> str:
    """The declaration of a function whose definition is `text` (its prototype line)."""
    head = text.partition("\n")[0]
    head = re.sub(r"^define (internal )?", "declare ", head)
    return head + "\n"
