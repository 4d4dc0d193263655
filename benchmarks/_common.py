"""Helpers shared by the benchmark scripts (not part of physnet's API)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy

import physnet


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    with contextlib.suppress(ValueError, OSError):
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import numba
    import pyamg

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pyamg": pyamg.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "physnet": physnet.__version__,
        "torch": _torch_version(),
        "platform": platform.platform(),
        # Other jobs on a shared machine slow every method; the 1-minute load average at the
        # start tells how busy it was (compare ratios within one run, not across runs).
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def median_time(function, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``repeats`` calls of ``function()``, and every time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def high_water_bytes() -> int:
    """This process's peak resident memory (``VmHWM``, Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_high_water() -> None:
    """Reset ``VmHWM`` to the current resident memory (writing 5 to clear_refs, Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def write_results(stem: str | os.PathLike, report: dict, markdown: str) -> None:
    """Write ``stem.json`` and ``stem.md`` atomically (the folder made if needed); print the
    markdown."""
    from pathlib import Path

    from physnet._io import write_text

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_text(stem.parent / f"{stem.name}.json", json.dumps(report, indent=2) + "\n")
    write_text(stem.parent / f"{stem.name}.md", markdown)
    print(markdown)


class ResultCache:
    """Scores in a JSON file, keyed by what determines them, so that a rerun recomputes only
    what changed; ``version`` invalidates every entry of an older format. Runs may share
    the file: a miss reads it again, and :meth:`put` merges with what is stored before it
    writes (atomically)."""

    def __init__(self, path: Path, version: int, enabled: bool = True) -> None:
        self.path, self.version, self.enabled = Path(path), version, enabled
        self.entries: dict[str, Any] = self._stored()

    def _stored(self) -> dict[str, Any]:
        if not (self.enabled and self.path.exists()):
            return {}
        stored = json.loads(self.path.read_text())
        return stored["entries"] if stored.get("version") == self.version else {}

    @staticmethod
    def key(**parts: Any) -> str:
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, key: str) -> Any:
        if not self.enabled:
            return None
        if key not in self.entries:
            self.entries = {**self._stored(), **self.entries}
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        from physnet._io import write_text

        self.entries[key] = value
        if self.enabled:
            self.entries = {**self._stored(), **self.entries}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps({"version": self.version, "entries": self.entries}))
