"""CuPy RawKernel sources and their memoized per-device factories.

Nothing here imports CuPy at module level: the kernels are compiled on first use,
once per device and dtype, and only on the CuPy path.
"""
