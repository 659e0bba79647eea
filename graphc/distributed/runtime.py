"""The MPI runtime under graphc's collectives: who we are, the host-side collectives, the
native symbols the llvm backend calls, and how a failing process ends the whole job.

MPI (through mpi4py) owns processes, launch and transport; nothing here is home-made. mpi4py is
imported only when the process was started by a launcher (``mpiexec`` sets ``PMI_RANK``,
``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ...): a plain ``python script.py`` — or a machine
without mpi4py — is one process, where every collective is an identity, and never pays for MPI's
initialization. ``GRAPHC_MPI=0`` forces the single-process mode, ``GRAPHC_MPI=1`` imports mpi4py
even without a launcher's variables (a singleton MPI process).

A collective that one process never reaches would hang the others forever. Two safeguards turn
that into an error: an uncaught exception on any process prints its traceback (prefixed with its
rank) and calls ``MPI_Abort`` (the launcher then ends every process, non-zero exit), and
`set_timeout` (or ``GRAPHC_MPI_TIMEOUT`` seconds) bounds every collective: a step or a host
collective still waiting after that long aborts the job naming what it waited for.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..errors import BackendError

_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                       "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD")
_timeout: list[float | None] = [None]


def launched() -> bool:
    """Was this process started by an MPI launcher (or asked to use MPI with GRAPHC_MPI=1)?"""
    flag = os.environ.get("GRAPHC_MPI", "").strip()
    if flag == "0":
        return False
    return flag == "1" or any(v in os.environ for v in _LAUNCHER_VARIABLES)


@cache
def mpi():
    """mpi4py's MPI module when this process runs under MPI, else None (single process)."""
    if not launched():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if _launcher_size() > 1:  # several processes that cannot talk: each would train alone
            raise BackendError(
                "this process was started by mpiexec with several processes, but mpi4py is not "
                "installed: pip install 'graphc[mpi]' (mpi4py and the MPICH wheel)") from None
        return None
    if MPI.COMM_WORLD.Get_size() > 1:
        _install_excepthook(MPI)
        _install_exit_guard(MPI)
    return MPI


def _launcher_size() -> int:
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        with contextlib.suppress(ValueError):
            return int(os.environ.get(var, "1"))
    return 1


def comm():
    """The communicator graphc's collectives use (COMM_WORLD), or None in one process."""
    MPI = mpi()
    return None if MPI is None else MPI.COMM_WORLD


def rank() -> int:
    c = comm()
    return 0 if c is None else c.Get_rank()


def size() -> int:
    c = comm()
    return 1 if c is None else c.Get_size()


def active() -> bool:
    """True when collectives really communicate (more than one process)."""
    return size() > 1


# -- failing processes end the job ---------------------------------------------------------

#: seconds between writing an aborting process's message and MPI_Abort: the launcher forwards
#: each process's output through its proxy, and an abort right after the write can kill the
#: proxy before the message is through (seen on a loaded machine: an abort with no message)
ABORT_GRACE = 1.0


def abort(message: str, code: int = 1) -> None:
    """Print `message` on stderr and end every process of the job (MPI_Abort)."""
    sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)
    MPI = mpi()
    if MPI is not None:
        MPI.COMM_WORLD.Abort(code)
    os._exit(code)


def _install_excepthook(MPI) -> None:
    """An uncaught exception on one process ends them all (the others may be waiting in a
    collective this one will never reach): traceback first, then MPI_Abort."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        who = f"[graphc rank {MPI.COMM_WORLD.Get_rank()} of {MPI.COMM_WORLD.Get_size()}]"
        lines = "".join(f"{who} {line}\n" for line in text.rstrip("\n").splitlines())
        sys.stderr.write(lines + f"{who} aborting the MPI job\n")
        sys.stderr.flush()
        time.sleep(ABORT_GRACE)
        if kind is KeyboardInterrupt:
            previous(kind, value, tb)
        MPI.COMM_WORLD.Abort(1)

    sys.excepthook = hook
    threading.excepthook = lambda args: hook(args.exc_type, args.exc_value,
                                             args.exc_traceback)


def _install_exit_guard(MPI) -> None:
    """``sys.exit`` with a failure status on one process ends them all too: SystemExit never
    reaches the excepthook, and the others would wait for it in their next collective (a
    job of two where one rank called sys.exit(3) spun until killed). A zero or None status
    exits as before; so does a thread other than the main one (it only ends that thread)."""
    plain_exit = sys.exit

    def exit(status=None):
        if status not in (None, 0) and threading.current_thread() is threading.main_thread():
            who = f"[graphc rank {MPI.COMM_WORLD.Get_rank()} of {MPI.COMM_WORLD.Get_size()}]"
            code = status if isinstance(status, int) else 1
            abort(f"{who} sys.exit({status!r}): aborting the MPI job", code)
        plain_exit(status)

    sys.exit = exit


def set_timeout(seconds: float | None) -> None:
    """Bound every collective (a distributed step, a host collective) to `seconds`: a process
    still waiting after that long prints what it waited for and aborts the job. None: no bound
    (MPI's own behaviour). The environment variable GRAPHC_MPI_TIMEOUT sets the default."""
    if seconds is not None and not 0 < seconds <= threading.TIMEOUT_MAX:
        raise ValueError(f"a collective timeout must be > 0 seconds (and at most "
                         f"{threading.TIMEOUT_MAX:.3g}, what a timer can wait), got {seconds}")
    _timeout[0] = None if seconds is None else float(seconds)


def timeout() -> float | None:
    if _timeout[0] is not None:
        return _timeout[0]
    value = os.environ.get("GRAPHC_MPI_TIMEOUT", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= threading.TIMEOUT_MAX:  # (-5 aborted the job at once; 1e300
        # made the watchdog's timer raise, and the job abort, too)
        raise ValueError(f"GRAPHC_MPI_TIMEOUT must be a finite number of seconds > 0, at most "
                         f"{threading.TIMEOUT_MAX:.3g}, got {value!r}")
    return seconds


@contextlib.contextmanager
def watchdog(what: str):
    """Abort the job if the body (which waits on other processes) outlasts the timeout. The
    body may be native code that never returns to Python: a timer thread does the aborting."""
    limit = timeout()
    if limit is None or not active():
        yield
        return
    message = (f"[graphc rank {rank()} of {size()}] {what} did not complete within {limit:g} s "
               "(another process failed or never reached it); aborting the MPI job")
    timer = threading.Timer(limit, abort, args=(message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def wait(request, what: str) -> None:
    """Complete a non-blocking MPI request, within the timeout when one is set."""
    limit = timeout()
    if limit is None:
        request.Wait()
        return
    deadline = time.monotonic() + limit
    pause = 1e-5
    while not request.Test():
        if time.monotonic() > deadline:
            abort(f"[graphc rank {rank()} of {size()}] {what} did not complete within "
                  f"{limit:g} s (another process failed or never reached it); aborting the "
                  "MPI job")
        time.sleep(pause)
        pause = min(pause * 2, 1e-3)


# -- host collectives on NumPy arrays ---------------------------------------------------------

_OPS = ("sum", "mean", "max", "min")


def _mpi_op(MPI, op: str):
    return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]


def _contiguous(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.bool_:
        raise BackendError("collectives take numbers, not booleans: cast to an integer first")
    return np.asarray(x, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)


def check_root(root, what: str) -> int:
    """`root` as a rank of this job, or a BackendError naming it and the job's size."""
    from ..ops.shape_ops import is_int_value

    if not is_int_value(root) or not 0 <= root < size():
        raise BackendError(f"{what}: root {root!r} is not a process of this job (size "
                           f"{size()}): a root is a rank 0 … {size() - 1}")
    return int(root)


def start_allreduce(x, op: str = "sum"):
    """Begin an allreduce of an array (MPI_Iallreduce); returns (result buffer, request), the
    request None in one process (the result is then a copy of x). Complete with `wait`."""
    x = _contiguous(x)
    out = np.empty_like(x)
    c = comm()
    if c is None or c.Get_size() == 1:
        out[...] = x
        return out, None
    request = c.Iallreduce(x, out, op=_mpi_op(mpi(), op))
    return out, request


def finish_allreduce(out: np.ndarray, request, op: str) -> np.ndarray:
    if request is not None:
        wait(request, f"allreduce({op}) of {out.size} values")
        if op == "mean":
            out = out / size() if out.dtype.kind != "f" else np.divide(out, size(), out=out)
    return out


def allreduce_array(x, op: str = "sum") -> np.ndarray:
    """The element-wise sum, mean or maximum of `x` over all processes (a copy of `x` alone)."""
    if op not in _OPS:
        raise ValueError(f"allreduce op must be one of {_OPS}, got {op!r}")
    out, request = start_allreduce(x, op)
    return finish_allreduce(out, request, op)


def broadcast_array(x, root: int = 0) -> np.ndarray:
    """Process `root`'s `x` on every process (shape and dtype must agree)."""
    x = _contiguous(x).copy()
    c = comm()
    if c is None or c.Get_size() == 1:
        return x
    root = check_root(root, "broadcast")
    wait(c.Ibcast(x, root=root), f"broadcast of {x.size} values from rank {root}")
    return x


def reduce_array(x, root: int = 0) -> np.ndarray:
    """The sum of `x` over all processes on `root`; zeros elsewhere."""
    x = _contiguous(x)
    out = np.zeros_like(x)
    c = comm()
    if c is None or c.Get_size() == 1:
        out[...] = x
        return out
    root = check_root(root, "reduce")
    wait(c.Ireduce(x, out, op=mpi().SUM, root=root), f"reduce of {x.size} values to {root}")
    if c.Get_rank() != root:
        out[...] = 0
    return out


def broadcast_object(obj, root: int = 0):
    """A picklable object from `root` to every process (itself in one process)."""
    c = comm()
    if c is None or c.Get_size() == 1:
        return obj
    with watchdog(f"broadcast of a {type(obj).__name__} from rank {root}"):
        return c.bcast(obj, root=root)


def barrier() -> None:
    """Wait until every process gets here."""
    c = comm()
    if c is not None and c.Get_size() > 1:
        wait(c.Ibarrier(), "barrier")


def broadcast_parameters(storages) -> None:
    """Every parameter value as on rank 0 (one collective for all of them): what compiling a
    distributed step does first, so that every process starts from the same model and
    optimizer state."""
    storages = list(storages)
    if not active() or not storages:
        return
    values = broadcast_object([s.value for s in storages] if rank() == 0 else None)
    for storage, value in zip(storages, values):
        if storage.value.shape != value.shape or storage.value.dtype != value.dtype:
            raise BackendError(
                f"parameter {storage.name!r} has shape {storage.value.shape} "
                f"{storage.value.dtype} on rank {rank()} but {value.shape} {value.dtype} on "
                "rank 0: every process must build the same model")
        if rank() != 0:
            storage.write(value)


# -- what native code calls ---------------------------------------------------------------------

@dataclass(frozen=True)
class Native:
    """MPI as the llvm backend's generated code reaches it: the entry points of the very
    library mpi4py loaded (registered as JIT symbols ``graphc_MPI_*``) and a table of handles
    (``graphc_mpi_handles``: int64 words, see HANDLE_*) read at run time, so the machine code is
    the same in every process and can be cached."""

    library: str
    handle_bits: int  # width of MPI_Comm / MPI_Datatype / MPI_Op in this implementation
    request_bytes: int
    status_bytes: int
    table: ctypes.Array  # kept alive: its address is a JIT symbol


HANDLES = ("comm", "rank", "size", "float32", "float64", "int32", "int64", "sum", "max", "min")


def handle_index(name: str) -> int:
    return HANDLES.index(name)


def library_path() -> str | None:
    """The MPI shared library this process loaded (read from /proc/self/maps)."""
    return None if mpi() is None else _loaded_library()


@cache
def native() -> Native:
    """Register MPI's entry points and the handle table with the JIT (once per process)."""
    from graphc.backends.kernelgen.toolchain import add_symbol

    MPI = mpi()
    if MPI is None:
        raise BackendError("native collectives need MPI: run under mpiexec with mpi4py")
    path = library_path()
    lib = ctypes.CDLL(path) if path else ctypes.CDLL(None)
    for name in ("MPI_Allreduce", "MPI_Iallreduce", "MPI_Wait", "MPI_Bcast", "MPI_Reduce",
                 "MPI_Abort"):
        fn = getattr(lib, name, None) or getattr(lib, "P" + name, None)
        if fn is None:
            raise BackendError(f"the MPI library {path} has no {name}")
        add_symbol(f"graphc_{name}", ctypes.cast(fn, ctypes.c_void_p).value)
    world = MPI.COMM_WORLD
    values = {"comm": MPI._handleof(world), "rank": world.Get_rank(), "size": world.Get_size(),
              "float32": MPI._handleof(MPI.FLOAT), "float64": MPI._handleof(MPI.DOUBLE),
              "int32": MPI._handleof(MPI.INT32_T), "int64": MPI._handleof(MPI.INT64_T),
              "sum": MPI._handleof(MPI.SUM), "max": MPI._handleof(MPI.MAX),
              "min": MPI._handleof(MPI.MIN)}
    table = (ctypes.c_int64 * len(HANDLES))(*[int(values[h]) for h in HANDLES])
    add_symbol("graphc_mpi_handles", ctypes.addressof(table))
    return Native(path or "(linked into the process)", 8 * MPI._sizeof(MPI.Comm),
                  MPI._sizeof(MPI.Request), max(MPI._sizeof(MPI.Status), 8), table)


def describe() -> list[tuple[str, str]]:
    """(key, value) lines for ``graphc info``: is MPI usable here, which library, where is
    mpiexec, which process is this. Outside mpiexec the library is loaded without
    initializing MPI (only to read its version)."""
    try:
        import mpi4py
    except ImportError:
        return [("mpi4py", "not installed"),
                ("available", "no (pip install 'graphc[mpi]': mpi4py and the MPICH wheel); "
                              "gc.distributed runs as one process")]
    MPI = mpi()
    if MPI is None:
        mpi4py.rc.initialize = False  # (reading the version needs no MPI_Init)
        mpi4py.rc.finalize = False
        try:
            from mpi4py import MPI
        except ImportError as exc:
            return [("mpi4py", mpi4py.__version__), ("available", f"no ({exc})")]
    version = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
    path = _loaded_library()
    launcher = _which("mpiexec")
    where = f"rank {rank()} of {size()}" + ("" if launched() else " (not started by mpiexec)")
    usable = "yes" if launcher else "yes, with an MPI launcher (no mpiexec on PATH)"
    return [("mpi4py", mpi4py.__version__), ("library", f"{version} ({path or '?'})"),
            ("mpiexec", launcher or "not found"), ("this process", where),
            ("available", f"{usable}: mpiexec -n 2 python your_script.py")]


def _loaded_library() -> str | None:
    try:
        maps = open("/proc/self/maps").read()  # noqa: SIM115
    except OSError:
        return None
    found = sorted(set(re.findall(r"(/\S*lib(?:mpi|mpich)\S*\.so[.\d]*)", maps)))
    return found[0] if found else None


def _which(name: str) -> str | None:
    import shutil

    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else shutil.which(name)
