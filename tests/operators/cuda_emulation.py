"""Run physnet's CUDA RawKernel sources on the CPU: compiled as C++ by g++, called by ctypes.

The kernel source is the exact string the CuPy path compiles (``kernel_source(dtype)``),
preceded by a short shim that gives it CUDA's vocabulary: ``blockIdx``, ``threadIdx``,
``blockDim``, ``gridDim``, ``float2`` / ``double2``, ``__shared__`` and ``__syncthreads()``.
``sincos`` / ``sincosf`` are glibc's.

A launch runs the blocks one after the other. The threads of a block are fibers
(``ucontext``) on one OS thread: each runs until it reaches ``__syncthreads()`` or returns,
then the next one runs, so a barrier is a round over the block's threads. ``__shared__``
arrays are static, one copy, which is correct because only one block runs at a time. The
threads of a round run in increasing or, with ``reverse=True``, decreasing order; a kernel
that misses a barrier gives different results in the two orders. A launch fails if the
threads of a block disagree at a barrier (some wait while others have returned or wait
at another one), if an argument's size differs from the kernel's parameter, or if an
array is given for a scalar or the reverse.

:class:`EmulatedCuPy` stands in for ``cupy`` (NumPy arrays that answer ``.device.id``)
and :class:`EmulatedModule` for the compiled ``cupy.RawModule``, so the tests run the
CuPy path's own launch code (grid, block, argument packing) against the emulated kernels.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import re
import shutil
import subprocess
import types
from pathlib import Path
from typing import Any

import numpy as np

COMPILER = shutil.which("g++")

SHIM = r"""
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

struct dim3 { unsigned int x, y, z; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };

dim3 gridDim, blockDim, blockIdx, threadIdx;

#define __global__
#define __shared__ static

namespace emulation {

constexpr std::size_t STACK_BYTES = 256 * 1024;

struct Thread {
    ucontext_t context;
    std::vector<char> stack;
    long barriers = 0;
    bool done = false;
};

ucontext_t scheduler;
Thread* current = nullptr;
std::function<void()>* body = nullptr;

void entry() {
    (*body)();
    current->done = true;  /* uc_link resumes the scheduler */
}

void syncthreads() {
    if (current == nullptr) std::abort();
    ++current->barriers;
    swapcontext(&current->context, &scheduler);
}

/* 0 on success, -2 when the threads of a block disagree at a barrier. */
int run(unsigned grid, unsigned block, bool reverse, std::function<void()> kernel) {
    body = &kernel;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    std::vector<Thread> threads(block);
    for (Thread& thread : threads) thread.stack.resize(STACK_BYTES);
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        for (Thread& thread : threads) {
            getcontext(&thread.context);
            thread.context.uc_stack.ss_sp = thread.stack.data();
            thread.context.uc_stack.ss_size = thread.stack.size();
            thread.context.uc_link = &scheduler;
            makecontext(&thread.context, entry, 0);
            thread.barriers = 0;
            thread.done = false;
        }
        for (bool waiting = true; waiting;) {
            waiting = false;
            bool returned = false;
            long barrier = -1;
            for (unsigned n = 0; n < block; ++n) {
                const unsigned t = reverse ? block - 1 - n : n;
                Thread& thread = threads[t];
                if (thread.done) continue;
                threadIdx = {t, 0, 0};
                current = &thread;
                swapcontext(&scheduler, &thread.context);
                current = nullptr;
                if (thread.done) {
                    returned = true;
                } else {
                    if (barrier >= 0 && thread.barriers != barrier) return -2;
                    barrier = thread.barriers;
                    waiting = true;
                }
            }
            if (waiting && returned) return -2;
        }
    }
    return 0;
}

template <class A>
constexpr long long size_code() {
    /* what the caller must pass: -(element size) for a pointer, the size for a scalar */
    return std::is_pointer<A>::value
        ? -(long long)sizeof(typename std::remove_pointer<A>::type)
        : (long long)sizeof(A);
}

template <class... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(args[I])...);
}

/* 0 on success; -1: wrong number of arguments; -2: barrier disagreement;
   i + 1: argument i has the wrong size or kind. */
template <class... A>
int launch(void (*kernel)(A...), unsigned grid, unsigned block, int reverse,
           int n_args, const long long* sizes, void** args) {
    if (n_args != (int)sizeof...(A)) return -1;
    const long long expected[] = {size_code<A>()..., 0};
    for (int i = 0; i < n_args; ++i)
        if (sizes[i] != expected[i]) return i + 1;
    return run(grid, block, reverse != 0,
               [&] { call(kernel, args, std::index_sequence_for<A...>{}); });
}

}  // namespace emulation

#define __syncthreads() emulation::syncthreads()
"""

_LAUNCHER = """
extern "C" int physnet_emulate_{name}(unsigned grid, unsigned block, int reverse,
                                      int n_args, const long long* sizes, void** args)
{{
    return emulation::launch({name}, grid, block, reverse, n_args, sizes, args);
}}
"""

_KERNEL_NAME = re.compile(r"__global__\s+void\s+(\w+)\s*\(")


def kernel_names(source: str) -> list[str]:
    """The ``__global__`` functions of a CUDA source, in order."""
    return _KERNEL_NAME.findall(source)


def compile_kernels(sources: list[str], directory: Path) -> ctypes.CDLL:
    """Compile CUDA sources, with the shim, into one shared library in ``directory``.

    The library is named by a hash of its text, so a second call with the same sources
    loads the one already built.
    """
    if COMPILER is None:
        raise RuntimeError("g++ is not on PATH")
    names = [name for source in sources for name in kernel_names(source)]
    text = "\n".join([SHIM, *sources, *(_LAUNCHER.format(name=name) for name in names)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    library = Path(directory) / f"kernels_{digest}.so"
    if not library.exists():
        cpp = library.with_suffix(".cpp")
        cpp.write_text(text)
        command = [COMPILER, "-std=c++17", "-O1", "-shared", "-fPIC", "-o", str(library)]
        result = subprocess.run([*command, str(cpp)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"g++ failed on {cpp}:\n{result.stderr}")
    return ctypes.CDLL(str(library))


class EmulatedKernel:
    """A compiled kernel, called like ``cupy.RawKernel``: ``kernel(grid, block, args)``.

    Arrays are passed as device pointers, NumPy scalars by value; Python ints and floats
    become ``long long`` and ``double``, as CuPy passes them.
    """

    reverse = False  # run each round of a block's threads in decreasing order

    def __init__(self, library: ctypes.CDLL, name: str) -> None:
        self.name = name
        self._function = getattr(library, f"physnet_emulate_{name}")
        self._function.restype = ctypes.c_int

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        if len(grid) != 1 or len(block) != 1 or shared_mem != 0:
            raise NotImplementedError(
                f"{self.name}: the emulation runs 1-D launches with static shared memory, "
                f"got grid={grid}, block={block}, shared_mem={shared_mem}"
            )
        holders, sizes = [], []
        for value in args:
            if isinstance(value, np.ndarray):
                if not value.flags.c_contiguous or value.ctypes.data % 16:
                    raise ValueError(f"{self.name}: arrays must be contiguous and 16-byte aligned")
                holders.append(ctypes.c_void_p(value.ctypes.data))
                sizes.append(-value.dtype.itemsize)
            elif isinstance(value, (int, float, np.generic)) and not isinstance(value, bool):
                scalar = np.array(value)  # int -> int64, float -> float64, as CuPy passes them
                holders.append(ctypes.create_string_buffer(scalar.tobytes(), scalar.nbytes))
                sizes.append(scalar.nbytes)
            else:
                raise TypeError(f"{self.name}: cannot pass a {type(value).__name__}")
        pointers = [ctypes.addressof(holder) for holder in holders]
        n = len(args)
        status = self._function(
            ctypes.c_uint(int(grid[0])),
            ctypes.c_uint(int(block[0])),
            ctypes.c_int(int(self.reverse)),
            ctypes.c_int(n),
            (ctypes.c_longlong * max(n, 1))(*sizes),
            (ctypes.c_void_p * max(n, 1))(*pointers),
        )
        if status == -1:
            raise TypeError(f"{self.name}: wrong number of arguments ({n})")
        if status == -2:
            raise RuntimeError(f"{self.name}: the threads of a block disagree at __syncthreads")
        if status > 0:
            raise TypeError(
                f"{self.name}: argument {status - 1} ({args[status - 1]!r:.40}) does not match "
                "the kernel's parameter in size or kind (array / scalar)"
            )


class EmulatedModule:
    """Stands in for a compiled ``cupy.RawModule``."""

    def __init__(self, library: ctypes.CDLL, reverse: bool = False) -> None:
        self._library = library
        self.reverse = reverse

    def get_function(self, name: str) -> EmulatedKernel:
        kernel = EmulatedKernel(self._library, name)
        kernel.reverse = self.reverse
        return kernel


class DeviceArray(np.ndarray):
    """A NumPy array that answers ``.device.id`` and ``str(.device)`` like a CuPy array."""

    @property
    def device(self) -> Any:  # type: ignore[override]
        return types.SimpleNamespace(id=0)


def to_device(array: Any, dtype: Any = None) -> DeviceArray:
    """A contiguous, 16-byte aligned copy of ``array`` as a :class:`DeviceArray`."""
    array = np.asarray(array, dtype=dtype)
    buffer = np.empty(array.nbytes + 16, dtype=np.uint8)
    start = -buffer.ctypes.data % 16
    out = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out.view(DeviceArray)


class EmulatedCuPy(types.SimpleNamespace):
    """The part of ``cupy`` the physnet kernel launchers use, on NumPy arrays."""

    def __init__(self) -> None:
        super().__init__(
            cuda=types.SimpleNamespace(Device=lambda device_id=0: contextlib.nullcontext()),
            asarray=to_device,
            ascontiguousarray=to_device,
            empty=lambda shape, dtype=float: to_device(np.empty(shape, dtype=dtype)),
            empty_like=lambda a: to_device(np.empty_like(a)),
            zeros=lambda shape, dtype=float: to_device(np.zeros(shape, dtype=dtype)),
        )
