"""``gc.save`` / ``gc.load``: modules, optimizer state, compiled functions and graphs in one
file format, written atomically and read without ever running code from the file.

The format (version 2; docs/file-format.md describes it field by field) is a zip archive
holding

* ``manifest.json`` — ``{"format": "graphc", "version": 2, "kind": ..., "graphc": version,
  "metadata": {...}}``; kind is one of ``module``, ``optimizer``, ``function``, ``graph``,
  ``parameters``, ``arrays``;
* ``content.json`` — the structure: state keys, a module spec, a graph's nodes (graphs.py);
* ``arrays.npz`` — every array, referenced from the JSON by key; read with
  ``allow_pickle=False``.

Version 2 adds nested graphs (an attribute ``{"graph": tree}``, for ops such as a loop whose
node holds its body); this graphc reads versions 1 and 2 and writes version 2.

What ``gc.load(path)`` returns, by kind:

* ``module``: a rebuilt module when it is made of gc.nn classes only, with its ties (one
  parameter under several keys: the file's ``ties``) rebuilt; otherwise pass ``into=model``
  (an instance built by your code), whose parameters and buffers are set;
* ``optimizer``: the state dict, or with ``into=opt`` that optimizer with its state set;
* ``function``: a new compiled Function (same graph, the saved parameter values, on
  ``backend``), or with ``into=fn`` the saved values written into fn's parameters (how a
  training checkpoint is restored); ``into=model`` (or an optimizer) takes that object's state
  out of the saved step, matching the names its parameters show in graphs;
* ``graph``: a Graph (with ``outputs`` set when tensors were saved);
* ``parameters`` (a list of parameter tensors was saved): their values by name, or with
  ``into=[parameters]`` those parameters set;
* ``arrays``: the dict of arrays.

A file is data. Nothing in it is executed: no pickle, ``eval``, ``exec`` or ``sympify`` on
the load path; only ``gc.nn`` classes are instantiated; ops come from the registry by name;
sympy trees are rebuilt by dispatch over a whitelist, their symbols must be the ones graphc
generates (``x0, x1, ...`` in elementwise expressions, ASCII identifiers for dimensions);
literals, nesting and indices are bounded and every field is type-checked. Free text (names,
scopes, labels, source locations, metadata) loads as it is: the backends put it into code
only through ``graphc.ir.text``. A corrupt, truncated, foreign or malformed file raises
``FormatError`` (a ``gc.GraphError``).
"""

from __future__ import annotations

import io as _bytes_io
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import GraphError
from ..files import atomic_write
from ..init import allocation_budget
from ..ir.graph import Graph, topological
from ..ir.tensor import Tensor
from .expressions import short
from .graphs import ArrayTable, decode_graph, encode_graph, graph_nodes, parameter_keys
from .modules import build_module, module_spec

__all__ = ["FormatError", "save", "load", "read_metadata", "read_extra_arrays", "FORMAT",
           "VERSION", "READ_VERSIONS"]

FORMAT = "graphc"
VERSION = 2  # what gc.save writes
READ_VERSIONS = (1, 2)  # what gc.load reads (version 2 added nested graphs)
KINDS = ("module", "optimizer", "function", "graph", "parameters", "arrays")


class FormatError(GraphError):
    """A file is not a graphc file, is corrupt or truncated, or does not fit the target."""


# -- saving -----------------------------------------------------------------------------------


def _state_doc(tensors: Mapping[str, Tensor], table: ArrayTable) -> dict:
    # a tensor listed under several keys (a tie) is stored once
    return {key: table.put(t.value, t.node.attrs["storage"], f"state {key!r}")
            for key, t in tensors.items()}


def _encode(obj, table: ArrayTable) -> tuple[str, dict]:
    from ..function import Function
    from ..nn.module import Module
    from ..optim.optimizers import Optimizer

    if isinstance(obj, Module):
        try:
            spec, why = module_spec(obj), None
        except GraphError as exc:
            spec, why = None, str(exc)
        content = {"class": type(obj).__name__, "spec": spec, "not_rebuildable": why,
                   "state": _state_doc(obj.state_tensors(), table)}
        ties = obj.ties()
        if ties:
            content["ties"] = ties
        return "module", content
    if isinstance(obj, Optimizer):
        return "optimizer", {"class": type(obj).__name__,
                             "state": _state_doc(obj.state_tensors(), table)}
    if isinstance(obj, Function):
        program = obj.graph
        tree = encode_graph(program.name, list(program.nodes), table, inputs=program.inputs,
                            outputs=program.outputs, updates=program.updates)
        keys = parameter_keys(program.nodes)
        index = {n.uid: i for i, n in enumerate(program.nodes)}
        return "function", {"graph": tree, "single": bool(obj._single), "backend": obj.backend,
                            "parameters": {k: index[n.uid] for k, n in keys.items()}}
    if isinstance(obj, Graph):
        nodes, triples = graph_nodes(obj)
        return "graph", {"graph": encode_graph(obj.name, nodes, table, inputs=obj.inputs,
                                               outputs=obj.outputs, updates=obj.updates,
                                               default_updates=triples)}
    tensors = [obj] if isinstance(obj, Tensor) else obj
    if isinstance(tensors, (list, tuple)) and tensors and all(
            isinstance(t, Tensor) for t in tensors):
        outs = [t.node for t in tensors]
        if all(n.op.name == "parameter" for n in outs):
            keys = parameter_keys(outs)
            return "parameters", {"state": {k: table.put(n.attrs["storage"].value,
                                                         what=f"parameter {k!r}")
                                            for k, n in keys.items()}}
        return "graph", {"graph": encode_graph(tensors[0].graph.name, topological(outs), table,
                                               outputs=outs)}
    if isinstance(obj, Mapping) and all(isinstance(k, str) for k in obj):
        return "arrays", {"arrays": {k: table.put(v, what=f"array {k!r}")
                                     for k, v in obj.items()}}
    raise GraphError(f"gc.save cannot write a {type(obj).__name__}: save a Module, an "
                     "Optimizer, a compiled Function, a Graph, tensors or a dict of arrays")


def save(obj, path: str | os.PathLike, metadata: Mapping | None = None,
         extra_arrays: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write `obj` (module, optimizer, compiled function, graph, tensors or a dict of arrays)
    to `path` atomically: a crash mid-write leaves the previous file intact. `metadata` is any
    JSON-serializable dict kept in the manifest (``read_metadata``), e.g. a checkpoint's epoch;
    `extra_arrays` named arrays kept beside the object (``read_extra_arrays``), e.g. the best
    parameters early stopping will restore.

    Only what ``gc.load`` reads back is written: every array and the JSON parts are checked
    first (an array holding Python objects, which np.savez would pickle, or metadata JSON
    cannot hold is a FormatError naming it), and a refused save leaves `path` as it was.
    """
    from .. import __version__

    table = ArrayTable()
    kind, content = _encode(obj, table)
    if extra_arrays:
        if not isinstance(extra_arrays, Mapping) or not all(
                isinstance(k, str) for k in extra_arrays):
            raise GraphError("extra_arrays must be a dict with str keys")
        content["extra_arrays"] = {k: table.put(v, what=f"extra_arrays[{k!r}]")
                                   for k, v in extra_arrays.items()}
    if metadata is not None and not isinstance(metadata, Mapping):
        raise FormatError(f"gc.save: metadata must be a dict, not {type(metadata).__name__}")
    manifest = {"format": FORMAT, "version": VERSION, "kind": kind, "graphc": __version__,
                "metadata": dict(metadata or {})}
    manifest_text = _json_text(manifest, "the metadata", indent=1)
    content_text = _json_text(content, f"the {kind}'s structure")
    arrays = _bytes_io.BytesIO()
    np.savez(arrays, **table.arrays)  # (no object arrays: ArrayTable.put refused them)
    buffer = _bytes_io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", manifest_text)
        z.writestr("content.json", content_text)
        z.writestr("arrays.npz", arrays.getvalue())
    return atomic_write(path, buffer.getvalue())


def _json_text(doc: dict, what: str, indent: int | None = None) -> str:
    """`doc` as JSON, or a FormatError (before anything is written) when `what` holds a value
    JSON cannot (a set, an array, an object) or a cycle."""
    try:
        return json.dumps(doc, indent=indent)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FormatError(f"gc.save: {what} cannot be written as JSON ({type(exc).__name__}: "
                          f"{short(str(exc))})") from None


# -- loading ----------------------------------------------------------------------------------

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, TypeError,
                IndexError, AttributeError, RecursionError, json.JSONDecodeError, OSError,
                NotImplementedError, ArithmeticError, MemoryError)

#: the most a deflated member may expand (deflate's own bound is about 1032:1; a file that
#: claims more is a bomb, which bzip2 or LZMA members, never written by gc.save, would allow)
MAX_EXPANSION = 1100
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _members(z: zipfile.ZipFile, where: str) -> set[str]:
    """The member names of `z`, once each checked: no name twice (two readers could see
    different members), only stored or deflated members, none claiming to expand beyond what
    deflate can. zipfile reads no more than a member's declared size, so the declared sizes
    bound what reading can allocate."""
    names: set[str] = set()
    for info in z.infolist():
        if info.filename in names:
            raise FormatError(f"{where} holds {info.filename!r} twice")
        names.add(info.filename)
        if info.compress_type not in _METHODS:
            raise FormatError(f"{where}: member {info.filename!r} is compressed with method "
                              f"{info.compress_type}; graphc files use only stored or deflated "
                              "members")
        limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
            MAX_EXPANSION * info.compress_size + (1 << 20)
        if info.file_size > limit:
            raise FormatError(f"{where}: member {info.filename!r} claims {info.file_size:,} "
                              f"bytes from {info.compress_size:,} compressed (a zip bomb?)")
    return names


def _npz_arrays(data: bytes, where: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz held in `data`, each array's header compared with its member's
    size before NumPy allocates what the header claims."""
    with zipfile.ZipFile(_bytes_io.BytesIO(data)) as inner:
        _members(inner, f"{where}'s arrays")
        for info in inner.infolist():
            with inner.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0  # (np.save writes 1.0, 2.0 past 64 KB)
                shape, _, dtype = read_header(stream)
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if claimed > info.file_size:
                raise FormatError(f"{where}: array {info.filename!r} claims shape {shape} "
                                  f"({claimed:,} bytes) in a member of {info.file_size:,}")
    with np.load(_bytes_io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _read(path) -> tuple[dict, dict, ArrayTable]:
    data = Path(path).read_bytes()
    where = f"{path}"
    try:
        with zipfile.ZipFile(_bytes_io.BytesIO(data)) as z:
            names = _members(z, where)
            if "manifest.json" not in names:
                raise FormatError(f"{where} is not a graphc file (no manifest.json)")
            manifest = json.loads(z.read("manifest.json"))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise FormatError(f"{where} is not a graphc file (its manifest does not say "
                                  f"format {FORMAT!r})")
            version = manifest.get("version")
            if type(version) is not int or version not in READ_VERSIONS:
                raise FormatError(f"{where} has format version {short(version)}; this graphc "
                                  f"reads versions {', '.join(map(str, READ_VERSIONS))} "
                                  f"(upgrade graphc to read newer files)")
            if not isinstance(manifest.get("kind"), str) or manifest["kind"] not in KINDS:
                raise FormatError(f"{where}: unknown kind {short(manifest.get('kind'))}")
            if not isinstance(manifest.get("metadata", {}), dict):
                raise FormatError(f"{where}: the manifest's metadata is not an object")
            content = json.loads(z.read("content.json"))
            arrays = _npz_arrays(z.read("arrays.npz"), where)
    except FormatError:
        raise
    except zipfile.BadZipFile as exc:
        raise FormatError(f"{where} is not a graphc file or is truncated/corrupt ({exc})") from None
    except _READ_ERRORS as exc:
        raise FormatError(f"{where} is corrupt: {type(exc).__name__}: {exc}") from None
    if not isinstance(content, dict):
        raise FormatError(f"{where} is corrupt: content.json is not an object")
    return manifest, content, ArrayTable(arrays)


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata dict stored by ``save(..., metadata=...)`` (e.g. a checkpoint's epoch)."""
    manifest, _, _ = _read(path)
    meta = manifest.get("metadata", {})
    return meta if isinstance(meta, dict) else {}


def read_extra_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays stored by ``save(..., extra_arrays=...)`` (empty when there are none)."""
    _, content, table = _read(path)
    extra = content.get("extra_arrays", {})
    try:
        return _arrays_of(extra, table)
    except GraphError as exc:
        raise FormatError(f"{path}: extra_arrays: {exc}") from None


def load(path: str | os.PathLike, into=None, backend: str = "numpy"):
    """Read a file written by ``gc.save`` (see the module docstring for what comes back).

    With `into`, values are written into an existing module, optimizer or compiled function
    after every key, shape and dtype was checked — a mismatch changes nothing.
    """
    manifest, content, table = _read(path)
    kind = manifest["kind"]
    try:
        return _LOADERS[kind](content, table, into, backend)
    except FormatError:
        raise
    except (GraphError, *_READ_ERRORS) as exc:
        raise FormatError(f"{path} ({kind}): {exc}") from None


def _arrays_of(state, table: ArrayTable) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise FormatError("bad state table")
    return {str(k): table.get(v) for k, v in state.items()}


def _class_name(value) -> str:
    """A saved class name for messages (free text: shown as read when it is a short str)."""
    return value if isinstance(value, str) and value.isidentifier() and len(value) < 80 \
        else short(value)


def _check_into(kind: str, into, cls_name: str, expected) -> None:
    if into is not None and not isinstance(into, expected):
        raise FormatError(f"the file holds a {kind} ({cls_name}); cannot load it into a "
                          f"{type(into).__name__}")


def _load_module(content, table, into, backend):
    from ..nn.module import Module

    cls_name = _class_name(content.get("class"))
    _check_into("module", into, cls_name, Module)
    state = _arrays_of(content["state"], table)
    ties = _ties_of(content.get("ties", {}), state)
    if into is None:
        if content.get("spec") is None:
            why = short(content.get("not_rebuildable"), 200)
            raise FormatError(f"this file holds a {cls_name}, which is not made of gc.nn classes "
                              f"only ({why}); build the model in code and load into it: "
                              f"gc.load(path, into=model)")
        # the file's state is all the model holds: building it may not make much more (a
        # kilobyte spec of Linear(60000, 60000) would allocate 27 GB before any check)
        held = sum(int(a.nbytes) for a in state.values())
        with allocation_budget(4 * held + (64 << 20), f"the {cls_name} this file describes"):
            into = build_module(content["spec"])
        for key, canonical in ties.items():
            into._tie(key, canonical)
    return into.load_state(state)


def _ties_of(ties, state: dict) -> dict[str, str]:
    """A module file's ``ties`` ({key: first key}, both state keys, the first not itself
    tied): checked before anything is built."""
    if not isinstance(ties, dict):
        raise FormatError(f"a module's ties must be an object, not {short(ties)}")
    for key, canonical in ties.items():
        if not isinstance(canonical, str) or key not in state or canonical not in state \
                or canonical in ties or key == canonical:
            raise FormatError(f"bad tie {short(key)} -> {short(canonical)}: both must be state "
                              f"keys, the second one not tied itself")
    return ties


def _load_optimizer(content, table, into, backend):
    from ..optim.optimizers import Optimizer

    _check_into("optimizer", into, _class_name(content.get("class")), Optimizer)
    state = _arrays_of(content["state"], table)
    return state if into is None else into.load_state(state)


def _load_function(content, table, into, backend):
    from ..function import Function, compile
    from ..nn.module import Module
    from ..optim.optimizers import Optimizer

    _check_into("function", into, "Function", (Function, Module, Optimizer))
    program = decode_graph(content["graph"], table)
    saved = _saved_parameters(content.get("parameters"), program)
    if isinstance(into, Function):
        return _restore_parameters(into, saved)
    if into is not None:
        return _restore_by_display_name(into, saved)
    graph = program

    def tensor(n):
        return Tensor(n, graph)

    ins = [tensor(n) for n in program.inputs]
    outs = [tensor(n) for n in program.outputs]
    updates = {tensor(p): tensor(v) for p, v in program.updates}
    single = content.get("single")
    if not isinstance(single, bool) or (single and len(outs) != 1):
        raise FormatError(f"bad 'single' flag {short(single)} for {len(outs)} output(s)")
    return compile(ins, outs[0] if single else outs, updates=updates, backend=backend)


def _saved_parameters(table, program) -> dict:
    """The function's parameter nodes by key (``parameters`` maps a key to a node index)."""
    if not isinstance(table, dict):
        raise FormatError("a function's parameter table must be an object")
    saved = {}
    for key, i in table.items():
        if type(i) is not int or not 0 <= i < len(program.nodes) \
                or program.nodes[i].op.name != "parameter":
            raise FormatError(f"parameter {short(key)}: {short(i)} is not the index of a "
                              f"parameter node")
        saved[key] = program.nodes[i]
    return saved


def _restore_parameters(fn, saved: dict) -> object:
    _checked_restore(fn, saved)()
    return fn


def _optimizer_counts(targets: dict, saved: dict) -> dict:
    """For a step saved before optimizers counted each parameter's updates (PyTorch's
    per-parameter ``state["step"]``): each such count the file lacks, from its own
    optimizer's count (`graphc.optim.optimizers.STEP_COUNT_OF`), the count the saving version
    used for every parameter."""
    from ..optim.optimizers import STEP_COUNT_OF

    key_of = {id(node.attrs["storage"]): key for key, node in targets.items()}
    found = {}
    for key, node in targets.items():
        owner = STEP_COUNT_OF.get(node.attrs["storage"]) if key not in saved else None
        owner_key = key_of.get(id(owner)) if owner is not None else None
        if owner_key in saved:
            found[key] = saved[owner_key]
    return found


def _checked_restore(fn, saved: dict):
    """Check the saved values of every parameter of `fn` (keys, shapes, dtypes) and return
    the function that writes them: nothing is written before every one was checked."""
    targets = parameter_keys(fn.graph.nodes)
    saved = {**saved, **_optimizer_counts(targets, saved)}
    missing, extra = sorted(set(targets) - set(saved)), sorted(set(saved) - set(targets))
    if missing or extra:
        raise FormatError(f"the saved function's parameters do not match: missing {missing}, "
                          f"unexpected {extra}")
    pairs = []
    for key, node in targets.items():
        value = saved[key].attrs["storage"].value
        storage = node.attrs["storage"]
        if value.shape != storage.value.shape or value.dtype != storage.value.dtype:
            raise FormatError(f"parameter {key}: the function has {storage.value.shape} "
                              f"{storage.value.dtype}, the file {value.shape} {value.dtype}")
        pairs.append((storage, storage.checked(value, key)))

    def write() -> None:
        for storage, value in pairs:  # everything checked: now write
            storage.write_checked(value)

    return write


def read_function_checkpoint(path: str | os.PathLike, fn):
    """``(metadata, extra_arrays, write)`` of a compiled function saved at `path`, read
    once: its metadata, its extra arrays, and a function that writes the saved parameter
    values into `fn`'s parameters — every key, shape and dtype already checked, nothing
    written yet (``gc.train.fit(resume=...)`` checks the rest of a run's state before it
    calls `write`). A file that is not a saved function fitting `fn` is a FormatError."""
    from ..function import Function

    if not isinstance(fn, Function):
        raise GraphError(f"read_function_checkpoint restores a compiled Function, not a "
                         f"{type(fn).__name__}")
    manifest, content, table = _read(path)
    kind = manifest["kind"]
    try:
        if kind != "function":
            raise FormatError(f"the file holds a {kind}; cannot load it into a Function")
        try:
            extra = _arrays_of(content.get("extra_arrays", {}), table)
        except GraphError as exc:
            raise FormatError(f"extra_arrays: {exc}") from None
        program = decode_graph(content["graph"], table)
        write = _checked_restore(fn, _saved_parameters(content.get("parameters"), program))
    except FormatError as exc:
        raise FormatError(f"{path} ({kind}): {exc}") from None
    except (GraphError, *_READ_ERRORS) as exc:
        raise FormatError(f"{path} ({kind}): {exc}") from None
    meta = manifest.get("metadata", {})
    return (meta if isinstance(meta, dict) else {}), extra, write


def _restore_by_display_name(into, saved: dict) -> object:
    """A module's (or optimizer's) state from a saved training step, matched by the names its
    parameters display in graphs ("conv1.weight", "adam.conv1.weight.exp_avg"): how a model is
    taken out of a ``fit`` checkpoint."""
    targets = into.state_tensors()
    missing = sorted({t.name for t in targets.values() if t.name not in saved})
    ambiguous = sorted({t.name for t in targets.values() if f"{t.name}#2" in saved})
    if ambiguous:
        raise FormatError(f"the saved function has several parameters named {ambiguous} "
                          f"(two models with the same names, e.g. two unnamed Sequentials): "
                          f"name each model with .named('generator') ... before compiling, "
                          f"or restore the whole step with gc.load(path, into=step)")
    arrays = {key: saved[t.name].attrs["storage"].value for key, t in targets.items()
              if t.name in saved}
    try:  # state the step never used may be optional to the object (an optimizer's skip count)
        return into.load_state(arrays)
    except GraphError:
        if missing:
            raise FormatError(f"the saved function has no parameters named {missing}") from None
        raise


def _load_graph(content, table, into, backend):
    if into is not None:
        raise FormatError("a graph file cannot be loaded into an object; gc.load(path) returns "
                          "the Graph")
    return decode_graph(content["graph"], table)


def _load_parameters(content, table, into, backend):
    state = _arrays_of(content["state"], table)
    if into is None:
        return state
    tensors = [into] if isinstance(into, Tensor) else list(into)
    if not all(isinstance(t, Tensor) and t.op == "parameter" for t in tensors):
        raise FormatError("a parameters file loads into a list of parameters")
    targets = parameter_keys([t.node for t in tensors])
    if set(targets) != set(state):
        raise FormatError(f"the saved parameters {sorted(state)} do not match {sorted(targets)}")
    for key, node in targets.items():
        if state[key].shape != node.attrs["storage"].value.shape:
            raise FormatError(f"parameter {key}: shape {node.attrs['storage'].value.shape} in "
                              f"memory, {state[key].shape} in the file")
        node.attrs["storage"].checked(state[key], key)  # every value checked before any write
    for key, node in targets.items():
        node.attrs["storage"].write(state[key], key)
    return into


def _load_arrays(content, table, into, backend):
    if into is not None:
        raise FormatError("an arrays file cannot be loaded into an object")
    return _arrays_of(content["arrays"], table)


_LOADERS = {"module": _load_module, "optimizer": _load_optimizer, "function": _load_function,
            "graph": _load_graph, "parameters": _load_parameters, "arrays": _load_arrays}
