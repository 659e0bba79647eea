"""A training loop's step called as a Python builtin: its arguments checked, its input
addresses written and the step run, all in native code.

Why: a training loop calls the same step with arrays of the same dtypes and shapes every
time, and on a small model the Python around the native step was a fifth of the call. The
ctypes path compared each array's dtype, shape and layout with the last call's in Python
(0.4 µs for one input), wrote each data address into the step's pointer table (0.3 µs an
input) and called the step through ctypes (about 0.5 µs): the autoencoder's 12.2 µs call
held 2.5 µs of it, the tiny MLP's 4.2 µs call 2.8.

How: one function, ``graphc_lane``, is compiled once per process as a METH_FASTCALL
C function; each lane is a builtin function object (``PyCFunction_NewEx``) whose ``self``
is an int64 array describing one binding of one step (`LaneRecord`). Called with the
arrays, it answers

* ``0``: the arrays are C-contiguous ndarrays (not subclasses) of exactly the recorded
  dtypes and shapes, their addresses were written into the table and the step ran and
  succeeded;
* ``1``: the same, but the step failed (its error record says why; it wrote no parameter);
* ``2``: an array is not of the recorded form: the step did not run.

The step runs without the GIL, as a ctypes call runs it. The fields read from an array
(data, nd, dimensions, descr, flags) are NumPy's ``PyArrayObject_fields``, public in its C
headers; `array_fields_as_expected` reads them from a probe array first, and where they
are not where this module expects them no lane is made (the ctypes path serves).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
from llvmlite import ir

from ..kernelgen import toolchain
from ..kernelgen.irutil import I32, I64, PTR, declare, i64, load, loop

#: byte offsets in NumPy's PyArrayObject_fields on a 64-bit CPython (after the 16 bytes of
#: PyObject_HEAD: refcount and type)
OB_TYPE, DATA, ND, DIMENSIONS, DESCR, FLAGS = 8, 16, 24, 32, 56, 64
C_CONTIGUOUS = 0x1  # NPY_ARRAY_C_CONTIGUOUS
#: the answers of a lane
RAN, FAILED, NOT_THIS_FORM = 0, 1, 2
#: the record's header: step, table, dims, ndarray's type, the number of inputs; then one
#: offset per input, then per input: slot, descr, nd, dims...
_STEP, _TABLE, _DIMS, _NDARRAY, _COUNT, _HEADER = 0, 1, 2, 3, 4, 5
_METH_FASTCALL = 0x80
_PYTHON_API = ("PyEval_SaveThread", "PyEval_RestoreThread", "PyLong_FromLong")


def _lane_ir() -> str:
    """``PyObject *graphc_lane(PyObject *self, PyObject *const *args, Py_ssize_t nargs)``."""
    module = ir.Module(name="graphc_lane")
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR, PTR, I64]), name="graphc_lane")
    save = declare(module, "PyEval_SaveThread", PTR, [])
    restore = declare(module, "PyEval_RestoreThread", ir.VoidType(), [PTR])
    from_long = declare(module, "PyLong_FromLong", PTR, [I64])
    self_, args, nargs = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    mismatch = fn.append_basic_block("not_this_form")

    def field(obj, offset, ty):
        return b.load(b.gep(obj, [i64(offset)], source_etype=ir.IntType(8)), typ=ty)

    def check(condition):
        ok = fn.append_basic_block("ok")
        b.cbranch(condition, ok, mismatch)
        b.position_at_end(ok)

    record = field(self_, DATA, PTR)  # the int64 array that is the lane's self
    header = [load(b, record, I64, i64(k)) for k in range(_HEADER)]
    table = b.inttoptr(header[_TABLE], PTR)
    check(b.icmp_signed("==", nargs, header[_COUNT]))
    with loop(b, header[_COUNT], name="input", unroll=False) as i:
        array = load(b, args, PTR, i)
        at = load(b, record, I64, b.add(i, i64(_HEADER)))
        check(b.icmp_unsigned("==", b.ptrtoint(field(array, OB_TYPE, PTR), I64),
                              header[_NDARRAY]))
        check(b.icmp_unsigned("==", b.ptrtoint(field(array, DESCR, PTR), I64),
                              load(b, record, I64, b.add(at, i64(1)))))
        nd = load(b, record, I64, b.add(at, i64(2)))
        check(b.icmp_signed("==", b.sext(field(array, ND, I32), I64), nd))
        flags = field(array, FLAGS, I32)
        check(b.icmp_unsigned("!=", b.and_(flags, ir.Constant(I32, C_CONTIGUOUS)),
                              ir.Constant(I32, 0)))
        dims = field(array, DIMENSIONS, PTR)
        with loop(b, nd, name="axis", unroll=False) as k:
            check(b.icmp_signed("==", load(b, dims, I64, k),
                                load(b, record, I64, b.add(at, b.add(k, i64(3))))))
        slot = load(b, record, I64, at)  # -1: an input the step never reads
        write, written = fn.append_basic_block("write"), fn.append_basic_block("written")
        b.cbranch(b.icmp_signed(">=", slot, i64(0)), write, written)
        b.position_at_end(write)
        b.store(b.ptrtoint(field(array, DATA, PTR), I64),
                b.gep(table, [slot], inbounds=True, source_etype=I64))
        b.branch(written)
        b.position_at_end(written)
    # a pointer typed with the step's signature: an indirect call needs it
    step = b.inttoptr(header[_STEP], ir.FunctionType(I32, [PTR, PTR]).as_pointer())
    thread = b.call(save, [])
    code = b.call(step, [table, b.inttoptr(header[_DIMS], PTR)])
    b.call(restore, [thread])
    failed = b.icmp_signed("!=", code, ir.Constant(I32, 0))
    b.ret(b.call(from_long, [b.select(failed, i64(FAILED), i64(RAN))]))
    b.position_at_end(mismatch)
    b.ret(b.call(from_long, [i64(NOT_THIS_FORM)]))
    return str(module)


class _MethodDef(ctypes.Structure):
    """CPython's PyMethodDef."""

    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


def array_fields_as_expected() -> bool:
    """Are an array's data, nd, dimensions, descr and flags where `graphc_lane` reads them?
    (Checked on probe arrays against what NumPy itself says of them.)"""

    def word(array, offset, ctype=ctypes.c_int64):
        return ctype.from_address(id(array) + offset).value

    def contiguous(array):
        return bool(word(array, FLAGS, ctypes.c_int32) & C_CONTIGUOUS)

    strided = np.zeros((3, 5), dtype=np.float32)[:, ::2]
    dims = (ctypes.c_int64 * 2).from_address(word(strided, DIMENSIONS))
    return (ctypes.sizeof(ctypes.c_void_p) == 8 and word(strided, OB_TYPE) == id(np.ndarray)
            and word(strided, DATA) == strided.ctypes.data
            and word(strided, ND, ctypes.c_int32) == 2 and tuple(dims) == strided.shape
            and word(strided, DESCR) == id(strided.dtype)
            and not contiguous(strided) and contiguous(np.zeros((3, 5))))


_made: list = []  # [(engine, method definition)] once compiled: never freed (lanes point at it)
_making = threading.Lock()


def _lane_function() -> tuple[object, _MethodDef] | None:
    """The compiled ``graphc_lane`` and its method definition, or None where the arrays'
    fields are not where it reads them. Made once per process, under a lock (two threads
    making their first lanes at once compiled it twice, and the lanes of the copy the cache
    did not keep pointed at freed code), and kept for the process: every lane's function
    object points at them, and each lane's record holds them too."""
    with _making:
        if not _made:
            if not array_fields_as_expected():
                _made.append(None)
            else:
                for name in _PYTHON_API:
                    toolchain.add_symbol(name, ctypes.cast(getattr(ctypes.pythonapi, name),
                                                           ctypes.c_void_p).value)
                engine, _hit = toolchain.jit(_lane_ir())
                _made.append((engine, _MethodDef(b"graphc_lane",
                                                 engine.get_function_address("graphc_lane"),
                                                 _METH_FASTCALL, None)))
        return _made[0]


class LaneRecord:
    """The description `graphc_lane` checks a call against: one binding of one step. It
    holds what its addresses point at (`owners`: the executable with its machine code, the
    binding with its table and buffers) and the dtypes whose addresses it compares, so that
    a lane is never left pointing at freed memory; its words are read-only."""

    def __init__(self, step: int, table: int, dims: int,
                 inputs: list[tuple[int, np.dtype, tuple[int, ...]]], owners: tuple = ()) -> None:
        """`inputs`: (table slot, dtype, shape) of each argument, in the call's order."""
        header = [step, table, dims, id(np.ndarray), len(inputs)]
        offsets, body = [], []
        start = len(header) + len(inputs)
        for slot, dtype, shape in inputs:
            offsets.append(start + len(body))
            body += [slot, id(dtype), len(shape), *shape]
        self.words = np.array(header + offsets + body, dtype=np.int64)
        self.words.flags.writeable = False
        self.dtypes = [dtype for _slot, dtype, _shape in inputs]
        self.owners = owners


class _Words(np.ndarray):
    """A record's words as the lane's ``self``: an int64 array (its data where `graphc_lane`
    reads it) that also holds the record, and so everything the record holds."""

    record: LaneRecord


def native_lane(record: LaneRecord):
    """A builtin function of the arrays that runs the step for `record` (answers: RAN,
    FAILED, NOT_THIS_FORM), or None where no lane can be made here. It holds the record,
    and through it what the record's addresses point at and the compiled lane itself."""
    made = _lane_function()
    if made is None:
        return None
    record.owners = (*record.owners, made)
    words = record.words.view(_Words)
    words.record = record
    _engine, method = made
    return _new_function(ctypes.addressof(method), words, None)


#: PyCFunction_NewEx(method, self, module), called with the GIL held
_new_function = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.py_object,
                                  ctypes.py_object)(("PyCFunction_NewEx", ctypes.pythonapi))
