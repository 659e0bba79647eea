"""One lock for every compiled function that shares a parameter with another.

A call updates its parameters in place, so two functions sharing a parameter (a training
step and an evaluation function, two GAN steps, a function compiled twice) must not run at
the same time from two threads: interleaved, their updates were lost or mixed (an audit saw
300 + 300 increments end anywhere from 300 to 600). A function's calls take its group's lock;
functions that share a parameter end up in one group.

Groups are merged when a function is created: each parameter storage remembers its group,
and a new function joins every group its parameters belong to. A merged group points to the
group it was merged into, and `CallGroup.acquire` follows those pointers, so calls that were
waiting on an old group's lock retry on the merged one. A merge first takes the old group's
lock: calls in flight under it finish before anything runs under the merged one. A call
holds one lock at a time, and merges happen under `_MERGING`, which no call takes, so there
is no lock order to get wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_MERGING = threading.Lock()


class CallGroup:
    """The lock that serializes the calls of a set of functions."""

    __slots__ = ("lock", "merged_into")

    def __init__(self) -> None:
        # re-entrant: reading a parameter (Tensor.value) takes it too, and code running
        # inside a call (a callback, a host step) may read one
        self.lock = threading.RLock()
        self.merged_into: CallGroup | None = None

    def root(self) -> CallGroup:
        group = self
        while group.merged_into is not None:
            group = group.merged_into
        return group

    def acquire(self) -> CallGroup:
        """Lock the group this one now is (it may be merged meanwhile); returns the group
        whose lock is held, to be released with ``group.lock.release()``."""
        while True:
            group = self.root()
            group.lock.acquire()
            if group.merged_into is None:
                return group
            group.lock.release()  # merged while we waited: the merged group's lock, then


@contextmanager
def between_calls(storage) -> Iterator[None]:
    """Hold the call lock of the functions using parameter `storage`, if any: a read or a
    write of its value then falls between two of their steps, never inside one."""
    if storage.call_group is None:
        yield
        return
    group = storage.call_group.acquire()
    try:
        yield
    finally:
        group.lock.release()


def group_for(storages: Iterable) -> CallGroup:
    """The call group of a new function using these parameter storages: the union of their
    groups (a fresh one when none of them has a group yet)."""
    storages = list(storages)
    with _MERGING:
        roots = list({id(g): g for g in (s.call_group.root() for s in storages
                                           if s.call_group is not None)}.values())
        group = roots[0] if roots else CallGroup()
        for other in roots[1:]:
            with other.lock:  # its calls in flight end first
                other.merged_into = group
        for storage in storages:
            storage.call_group = group
        return group
