"""Data for physnet: generated scenes and readers/writers for formats users already hold.

Examples
--------
>>> from physnet.datasets import available_scenes, make_scene
>>> "sphere" in available_scenes()
True
>>> make_scene("sphere", 16, ndim=2).rhs.shape
(16, 16)
"""

from physnet._io import FileFormatError
from physnet.datasets.scenes import Scene, available_scenes, make_scene, standard_rhs
from physnet.datasets.systems import (
    load_system,
    load_vector,
    read_eigen_sparse,
    read_eigen_vector,
    save_system,
)

__all__ = [
    "FileFormatError",
    "Scene",
    "available_scenes",
    "load_system",
    "load_vector",
    "make_scene",
    "read_eigen_sparse",
    "read_eigen_vector",
    "save_system",
    "standard_rhs",
]
