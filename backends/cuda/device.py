"""What a compiled step holds on a CUDA device, and giving it back.

A `DeviceExecutable` owns a loaded module and, per binding of the symbolic dims (per batch
size), a set of device buffers: the memory plan's buffers and scratch, the constants, the
inputs, the pointer table and the dims table. Parameters are different: their device copy
(`DeviceParameter`, one per parameter and driver, registered in the parameter's
``storage.devices``) is shared by every function on that device that uses the parameter.

`DeviceResources` keeps the books: bindings are kept in least-recently-used order, at most
`MAX_BINDINGS` of them (evicting one frees its buffers); `release` frees everything once,
whether it is called by ``close()`` or by the garbage collector (through a
``weakref.finalize`` on the executable that refers to the resources only, so it does not
keep the executable alive). A parameter copy is freed when the last function using it lets
go, after its newest value has been pulled to the host.
"""

from __future__ import annotations

from collections import OrderedDict

from graphc.errors import BackendError

from ..kernelgen.binding import MAX_BINDINGS  # per-batch-size buffer sets kept per function


class DeviceParameter:
    """Keeps a parameter resident on the device; the host copy is refreshed on demand (one of
    the parameter's `devices`, see ParamStorage). `users` counts the functions holding it."""

    def __init__(self, drv, storage) -> None:
        self.drv = drv
        host = storage.host_buffer()
        self.nbytes = host.nbytes
        self.newer = False
        self.users = 0
        self.ptr = drv.alloc(host.nbytes)
        try:
            drv.to_device(self.ptr, host.ctypes.data, host.nbytes)
        except BackendError:
            drv.free(self.ptr)
            raise

    def pull(self, storage) -> None:
        self.newer = False
        self.drv.to_host(storage._value.ctypes.data, self.ptr, self.nbytes)

    def host_changed(self, storage) -> None:
        self.newer = False
        self.drv.to_device(self.ptr, storage._value.ctypes.data, self.nbytes)


def device_copy(drv, storage) -> DeviceParameter:
    """The parameter's copy on this driver's device, made on first use (not yet acquired)."""
    for device in storage.devices:
        if isinstance(device, DeviceParameter) and device.drv is drv:
            return device
    device = DeviceParameter(drv, storage)
    storage.devices.append(device)
    return device


def let_go(storage, device: DeviceParameter) -> None:
    """One user fewer; the last one pulls the newest value to the host, then frees the copy
    and removes it from ``storage.devices``."""
    device.users -= 1
    if device.users > 0:
        return
    try:
        if device.newer:
            device.pull(storage)
    finally:
        if device in storage.devices:
            storage.devices.remove(device)
        device.drv.free(device.ptr)


class DeviceResources:
    """Everything one executable holds on the device. Holds no reference to the executable."""

    def __init__(self, drv) -> None:
        self.drv = drv
        self.module = None
        self.parameters: list[tuple[object, DeviceParameter]] = []  # (storage, copy) acquired
        self.bindings: OrderedDict = OrderedDict()  # key -> DeviceBinding, oldest first
        self.released = False

    def acquire(self, storage) -> DeviceParameter:
        device = device_copy(self.drv, storage)
        if not any(d is device for _, d in self.parameters):
            device.users += 1
            self.parameters.append((storage, device))
        return device

    def binding(self, key):
        """The binding for `key` (marked most recently used), or None."""
        state = self.bindings.get(key)
        if state is not None:
            self.bindings.move_to_end(key)
        return state

    def keep(self, key, state: DeviceBinding) -> None:
        """Add a new binding, evicting (and freeing) the least recently used beyond the bound."""
        while len(self.bindings) >= MAX_BINDINGS:
            _, old = self.bindings.popitem(last=False)
            old.free()
        self.bindings[key] = state

    def release(self) -> None:
        """Free every binding's buffers, let go of the parameter copies and unload the module.
        Runs once; later calls do nothing. Every step is tried even if one fails; the first
        driver error is raised at the end."""
        if self.released:
            return
        self.released = True
        errors: list[BaseException] = []

        def attempt(fn, *args):
            try:
                fn(*args)
            except Exception as exc:  # finish freeing, then report the first error
                errors.append(exc)

        while self.bindings:
            _, state = self.bindings.popitem(last=False)
            attempt(state.free)
        while self.parameters:
            storage, device = self.parameters.pop()
            attempt(let_go, storage, device)
        if self.module is not None:
            module, self.module = self.module, None
            attempt(self.drv.unload_module, module)
        if errors:
            raise errors[0]


class DeviceBinding:
    """Device buffers of one binding of the symbolic dims: every pointer `alloc` gave is in
    `allocations`, so `free` gives each back exactly once."""

    def __init__(self, drv) -> None:
        self.drv = drv
        self.allocations: list[int] = []

    def alloc(self, nbytes: int) -> int:
        ptr = self.drv.alloc(nbytes)
        self.allocations.append(ptr)
        return ptr

    def free(self) -> None:
        errors = []
        while self.allocations:
            try:
                self.drv.free(self.allocations.pop())
            except BackendError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
