"""Data for physnet: generators, the HDF5 store, and readers for formats users already hold.

:func:`open` reads any supported file (a physnet store, an FNO-style ``.mat`` Darcy file,
a PDEBench Darcy HDF5 file) as a :class:`FieldDataset`; :func:`generate` writes a
registered generator's samples into a store (deterministic per sample, resumable,
sharded by rank); scenes and system files serve the Poisson solvers.

Examples
--------
>>> from physnet.datasets import available_scenes, make_scene
>>> "sphere" in available_scenes()
True
>>> make_scene("sphere", 16, ndim=2).rhs.shape
(16, 16)
"""

from physnet._io import FileFormatError
from physnet.datasets._base import FieldDataset
from physnet.datasets._open import detect_format, open
from physnet.datasets.generate import (
    available_generators,
    generate,
    get_generator,
    merge_shards,
    plan_generation,
    register_generator,
)
from physnet.datasets.readers import FNODarcyDataset, PDEBenchDarcyDataset
from physnet.datasets.scenes import Scene, available_scenes, make_scene, standard_rhs
from physnet.datasets.store import StoreDataset, StoreWriter, verify_store
from physnet.datasets.systems import (
    load_system,
    load_vector,
    read_eigen_sparse,
    read_eigen_vector,
    save_system,
)

__all__ = [
    "FNODarcyDataset",
    "FieldDataset",
    "FileFormatError",
    "PDEBenchDarcyDataset",
    "Scene",
    "StoreDataset",
    "StoreWriter",
    "available_generators",
    "available_scenes",
    "detect_format",
    "generate",
    "get_generator",
    "load_system",
    "load_vector",
    "make_scene",
    "merge_shards",
    "open",
    "plan_generation",
    "read_eigen_sparse",
    "read_eigen_vector",
    "register_generator",
    "save_system",
    "standard_rhs",
    "verify_store",
]
