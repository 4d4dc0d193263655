"""One open file per process: the pattern every lazily reading dataset shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["PerProcessHandle"]


class PerProcessHandle:
    """A resource (an h5py file...) opened on first use in each process.

    h5py handles must not cross a ``fork`` (DataLoader workers) and cannot be pickled
    (``spawn`` workers): :meth:`get` opens the resource in the calling process, reopens
    it after a fork (the parent's handle is neither used nor closed by the child), and
    pickling drops it, so the unpickled copy opens its own.

    Parameters
    ----------
    opener : callable
        ``opener() -> resource``; it must be picklable (a module-level function or a
        :func:`functools.partial` of one). The resource must have ``close()``.
    """

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._resource: Any = None
        self._pid: int | None = None

    def get(self) -> Any:
        """The calling process's resource, opened if needed."""
        pid = os.getpid()
        if self._resource is None or self._pid != pid:
            self._resource = self._opener()
            self._pid = pid
        return self._resource

    def close(self) -> None:
        """Close this process's resource (the next :meth:`get` reopens it)."""
        if self._resource is not None and self._pid == os.getpid():
            self._resource.close()
        self._resource = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_opener": self._opener, "_resource": None, "_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
