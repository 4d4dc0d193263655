"""Package-level settings made on ``import physnet``."""

from __future__ import annotations

import os
import subprocess
import sys


def _numba_cache_dir(environment: dict[str, str]) -> str:
    code = "import physnet, numba; print(numba.config.CACHE_DIR)"
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_numba_caches_kernels_in_the_user_cache_not_in_the_package(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    environment["HOME"] = str(tmp_path)
    assert _numba_cache_dir(environment) == str(tmp_path / ".cache" / "physnet" / "numba")
    environment["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    assert _numba_cache_dir(environment) == str(tmp_path / "mine")
