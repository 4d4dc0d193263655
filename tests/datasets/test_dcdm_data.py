"""DCDM training right-hand sides: the fast mixture generator and the paper's Ritz recipe."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse.linalg

from physnet.datasets import make_scene
from physnet.datasets._dcdm_data import (
    AIR_MODES,
    HELD_OUT_FAMILIES,
    MIXTURE_COMPONENTS,
    TRAINING_FAMILIES,
    _chebyshev_residual,
    _ritz_basis,
    lanczos_ritz,
    multiscale_error,
    random_geometry,
    sample_choice,
)
from physnet.datasets.generate import generate, get_generator, plan_generation, sample_of
from physnet.operators.poisson import AIR, FLUID, SOLID, GridPoisson

SMALL_3D = {"size": 12, "ndim": 3}
SMALL_2D = {"size": 24, "ndim": 2}
TINY_RITZ = {"size": 10, "ndim": 2, "steps": 60, "theta": 5}


def only(component: str, **config) -> dict:
    """A configuration whose mixture is the one ``component``."""
    return {"mixture": {name: float(name == component) for name in MIXTURE_COMPONENTS}, **config}


def rhs_config(overrides: dict) -> dict:
    return get_generator("dcdm-rhs").check_config(overrides)


def rhs_sample(overrides: dict, index: int, seed: int = 0) -> dict[str, np.ndarray]:
    generator = get_generator("dcdm-rhs")
    return sample_of(generator, generator.check_config(overrides), seed, index)


def neumann_regions(flags: np.ndarray) -> list[np.ndarray]:
    """Masks of the face-connected fluid regions with no air neighbour."""
    structure = scipy.ndimage.generate_binary_structure(flags.ndim, 1)
    labels, count = scipy.ndimage.label(flags == FLUID, structure=structure)
    near_air = scipy.ndimage.binary_dilation(flags == AIR, structure=structure)
    return [labels == k for k in range(1, count + 1) if not np.any(near_air & (labels == k))]


def gradient_ratio(b: np.ndarray, flags: np.ndarray) -> float:
    """``||grad b|| / ||b||`` over the faces between two fluid cells (unit spacing)."""
    fluid = flags == FLUID
    squared = 0.0
    for axis in range(b.ndim):
        low = [slice(None)] * b.ndim
        high = [slice(None)] * b.ndim
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        low, high = tuple(low), tuple(high)
        both = fluid[low] & fluid[high]
        squared += float(np.sum((b[high] - b[low])[both] ** 2))
    return np.sqrt(squared) / float(np.linalg.norm(b))


# --- dcdm-rhs -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [SMALL_3D, SMALL_2D])
def test_fields_dtypes_shapes(overrides):
    generator = get_generator("dcdm-rhs")
    config = generator.check_config(overrides)
    shape = (overrides["size"],) * overrides["ndim"]
    assert generator.fields(config) == {"flags": (shape, np.int8), "rhs": (shape, np.float32)}
    assert generator.inputs == ("rhs", "flags")
    assert generator.targets == ("rhs", "flags")
    sample = sample_of(generator, config, 0, 3)
    assert sorted(sample) == ["flags", "rhs"]
    assert sample["flags"].shape == sample["rhs"].shape == shape
    assert sample["flags"].dtype == np.int8 and sample["rhs"].dtype == np.float32
    assert set(np.unique(sample["flags"])) <= {FLUID, SOLID, AIR}


@pytest.mark.parametrize("component", MIXTURE_COMPONENTS)
def test_deterministic_per_sample(component):
    overrides = only(component, **SMALL_3D)
    first = rhs_sample(overrides, 7, seed=5)
    again = rhs_sample(overrides, 7, seed=5)
    for name in ("flags", "rhs"):
        np.testing.assert_array_equal(first[name], again[name])
    other = rhs_sample(overrides, 8, seed=5)
    assert not np.array_equal(first["rhs"], other["rhs"])
    reseeded = rhs_sample(overrides, 7, seed=6)
    assert not np.array_equal(first["rhs"], reseeded["rhs"])


@pytest.mark.parametrize("component", MIXTURE_COMPONENTS)
@pytest.mark.parametrize("air", AIR_MODES)
def test_unit_norm_zero_off_fluid_consistent(component, air):
    overrides = only(component, **SMALL_2D)
    overrides["air"] = {mode: float(mode == air) for mode in AIR_MODES}
    for index in range(6):
        sample = rhs_sample(overrides, index)
        flags, rhs = sample["flags"], sample["rhs"].astype(np.float64)
        assert sample_choice(rhs_config(overrides), index).air == air
        assert np.all(rhs[flags != FLUID] == 0)
        assert np.linalg.norm(rhs) == pytest.approx(1.0, abs=1e-6)
        regions = neumann_regions(flags)
        if air == "closed":
            assert regions  # the whole fluid is pure Neumann
        for region in regions:
            assert abs(rhs[region].sum()) < 1e-5 * np.sqrt(region.sum())


def test_pure_neumann_systems_are_consistent_and_solvable():
    overrides = only("smooth", **SMALL_3D)
    overrides["air"] = {"top": 0.0, "surface": 0.0, "closed": 1.0}
    sample = rhs_sample(overrides, 2)
    A = GridPoisson(sample["flags"])
    b = A.gather(sample["rhs"].astype(np.float64))
    x, info = scipy.sparse.linalg.cg(A.to_csr(), b, rtol=1e-6, maxiter=2000)
    assert info == 0
    # Consistent up to the float32 rounding of the stored b: DCDM's rtol = 1e-6 is reachable.
    assert np.linalg.norm(b - A @ x) <= 1e-6 * np.linalg.norm(b)


def test_mixture_proportions_follow_the_config():
    weights = {"smooth": 0.1, "krylov": 0.5, "cg": 0.0, "operator": 0.3, "standard": 0.1}
    config = rhs_config({"mixture": weights, "families": ["sphere", "sphere", "blob"]})
    n = 2000
    choices = [sample_choice(config, i) for i in range(n)]
    for name, weight in weights.items():
        share = sum(c.component == name for c in choices) / n
        assert share == pytest.approx(weight, abs=0.005), name
    # Families are equally weighted per list entry, so listing one twice doubles it.
    assert sum(c.family == "sphere" for c in choices) / n == pytest.approx(2 / 3, abs=0.005)
    air = config["air"]
    for mode in AIR_MODES:
        share = sum(c.air == mode for c in choices) / n
        assert share == pytest.approx(air[mode] / sum(air.values()), abs=0.005), mode
    # Every contiguous block (a split) follows the proportions too.
    block = choices[1800:1900]
    assert sum(c.component == "krylov" for c in block) == pytest.approx(50, abs=3)


def test_held_out_families_never_in_the_default_mix():
    config = rhs_config({})
    assert config["families"] == list(TRAINING_FAMILIES)
    assert not set(HELD_OUT_FAMILIES) & set(TRAINING_FAMILIES)
    assert {sample_choice(config, i).family for i in range(5000)} == set(TRAINING_FAMILIES)
    catalogued = plan_generation("dcdm-rhs")
    assert not set(HELD_OUT_FAMILIES) & set(catalogued.config["families"])
    # ...but they can be asked for, for test sets of unseen geometries.
    held_out = rhs_config({"families": list(HELD_OUT_FAMILIES), **SMALL_2D})
    assert {sample_choice(held_out, i).family for i in range(20)} == set(HELD_OUT_FAMILIES)


@pytest.mark.parametrize("family", TRAINING_FAMILIES + HELD_OUT_FAMILIES)
@pytest.mark.parametrize("ndim", [2, 3])
def test_geometry_families(family, ndim):
    size = 24 if ndim == 2 else 16
    for seed in range(3):
        flags = random_geometry(family, size, ndim=ndim, rng=np.random.default_rng(seed))
        assert flags.shape == (size,) * ndim and flags.dtype == np.int8
        assert np.all(flags[..., -1] == AIR)
        assert np.count_nonzero(flags == FLUID) >= 0.1 * flags.size
        assert np.any(flags == SOLID) == (family != "empty")
    # The same draws give the same shape at every resolution (shapes in unit coordinates).
    coarse = random_geometry(family, 16, ndim=ndim, rng=np.random.default_rng(1))
    fine = random_geometry(family, 32, ndim=ndim, rng=np.random.default_rng(1))
    assert abs(np.mean(coarse == SOLID) - np.mean(fine == SOLID)) < 0.03


def test_random_placements_vary_with_the_draw():
    masks = [
        random_geometry("sphere", 16, ndim=3, rng=np.random.default_rng(seed)) == SOLID
        for seed in range(4)
    ]
    assert len({mask.tobytes() for mask in masks}) == 4


def test_surface_air_lies_above_the_fluid():
    rng = np.random.default_rng(3)
    flags = random_geometry("empty", 32, ndim=2, air="surface", rng=rng)
    for column in flags:
        air = np.flatnonzero(column == AIR)
        assert air.size == 0 or np.all(column[air[0] :] == AIR)
    assert 0.1 < np.mean(flags == AIR) < 0.7


def test_krylov_residuals_are_smoother_than_white_noise():
    overrides = only("krylov", size=16, ndim=3, krylov_white_fraction=1.0)
    ratios, white_ratios, low_share, white_low_share = [], [], [], []
    rng = np.random.default_rng(0)
    for index in range(12):
        sample = rhs_sample(overrides, index)
        flags = sample["flags"]
        white = np.where(flags == FLUID, rng.standard_normal(flags.shape), 0.0)
        ratios.append(gradient_ratio(sample["rhs"].astype(np.float64), flags))
        white_ratios.append(gradient_ratio(white, flags))
        for field, shares in ((sample["rhs"], low_share), (white, white_low_share)):
            energy = np.abs(np.fft.fftn(field)) ** 2
            wave = np.sqrt(
                sum(k**2 for k in np.meshgrid(*[np.fft.fftfreq(16, 1 / 16)] * 3, indexing="ij"))
            )
            shares.append(energy[wave <= 4].sum() / energy.sum())
    assert np.mean(ratios) < 0.75 * np.mean(white_ratios)
    assert np.median(low_share) > 3 * np.median(white_low_share)


def test_chebyshev_residual_keeps_only_low_modes():
    A = GridPoisson(make_scene("empty", 12, ndim=2).flags)
    values, vectors = np.linalg.eigh(A.to_csr().toarray())
    b = vectors.sum(axis=1)  # every eigencomponent 1
    for lower in (4.0, 0.8, 0.08):
        coefficients = vectors.T @ _chebyshev_residual(A, b, lower)
        assert np.all(np.abs(coefficients[values >= lower]) <= 1e-3 + 1e-12)
        assert np.all(np.abs(coefficients) <= 1 + 1e-12)
        assert coefficients[0] > 0.2  # the lowest mode survives


def test_validation_errors_name_the_key():
    with pytest.raises(ValueError, match=r"config\.families"):
        rhs_config({"families": ["cube"]})
    with pytest.raises(ValueError, match=r"config\.mixture"):
        rhs_config({"mixture": dict.fromkeys(MIXTURE_COMPONENTS, 0.0)})
    with pytest.raises(ValueError, match=r"config\.mixture: unknown key\(s\) \['ritz'\]"):
        rhs_config({"mixture": {"ritz": 1.0}})
    with pytest.raises(ValueError, match=r"config\.length_scales"):
        rhs_config({"length_scales": [0.3, 0.1]})
    with pytest.raises(ValueError, match=r"config\.krylov_wavelengths"):
        rhs_config({"krylov_wavelengths": [0.5, 0.1]})
    with pytest.raises(ValueError, match=r"config\.size"):
        rhs_config({"size": 4})


def test_generate_end_to_end(tmp_path):
    h5py = pytest.importorskip("h5py")
    from physnet.datasets.store import StoreDataset, verify_store

    path = generate(
        "dcdm-rhs", tmp_path / "rhs.h5", samples=4, progress=False, overrides={"size": 12}
    )
    summary = verify_store(path)
    assert summary["splits"] == {"train": 4, "val": 0, "test": 0}
    with StoreDataset(path) as data:
        assert data.inputs == ("rhs", "flags") and data.targets == ("rhs", "flags")
        generator = get_generator("dcdm-rhs")
        config = generator.check_config({"size": 12})
        for index in range(4):
            expected = sample_of(generator, config, 0, index)
            np.testing.assert_array_equal(data[index]["rhs"], expected["rhs"])
            np.testing.assert_array_equal(data[index]["flags"], expected["flags"])
    with h5py.File(path) as f:
        assert f.attrs["generator"] == "dcdm-rhs"


# --- dcdm-ritz ----------------------------------------------------------------------------


def test_lanczos_ritz_pairs_against_eigsh():
    A = GridPoisson(make_scene("empty", 12, ndim=2).flags).to_csr()  # 132 unknowns
    start = A @ np.random.default_rng(0).standard_normal(A.shape[0])
    values, vectors = lanczos_ritz(A, 60, start)
    assert values.shape == (60,) and vectors.shape == (A.shape[0], 60)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(60), atol=1e-12)
    np.testing.assert_allclose(np.sort(values), values)
    exact = np.sort(scipy.sparse.linalg.eigsh(A, k=4, which="SA")[0])
    np.testing.assert_allclose(values[:4], exact, rtol=1e-6)
    # Ritz pairs: the residual of the lowest one is small.
    assert np.linalg.norm(A @ vectors[:, 0] - values[0] * vectors[:, 0]) < 1e-6


def test_lanczos_ritz_full_run_gives_the_spectrum():
    A = GridPoisson(make_scene("sphere", 8, ndim=2).flags).to_csr()
    n = A.shape[0]
    values, vectors = lanczos_ritz(A, n + 10, np.ones(n))
    exact = np.linalg.eigvalsh(A.toarray())
    # One start vector sees each eigenvalue of a multiplicity once.
    np.testing.assert_allclose(values, np.unique(np.round(exact, 10)), atol=1e-9)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(values.size), atol=1e-10)


def test_lanczos_ritz_long_run_stays_orthogonal(monkeypatch):
    # Many steps past convergence of the extremal Ritz values (where plain Lanczos loses
    # orthogonality and repeats eigenvalues), the Ritz product in several column blocks,
    # and the progress bar: one Gram-Schmidt pass (plus DGKS) keeps the basis orthonormal.
    import physnet.datasets._dcdm_data as dcdm_data

    monkeypatch.setattr(dcdm_data, "_RITZ_BLOCK_BYTES", 8 * 300 * 37)  # 37-column blocks
    A = GridPoisson(make_scene("empty", 24, ndim=2).flags).to_csr()  # 552 unknowns
    start = A @ np.random.default_rng(1).standard_normal(A.shape[0])
    values, vectors = lanczos_ritz(A, 300, start, progress=True)
    assert vectors.shape == (A.shape[0], values.size) and values.size == 300
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(values.size), atol=1e-11)
    exact = np.linalg.eigvalsh(A.toarray())
    np.testing.assert_allclose(values[:6], exact[:6], rtol=1e-9)
    np.testing.assert_allclose(values[-6:], exact[-6:], rtol=1e-9)
    # No spurious copies ("ghosts") of the converged extremal eigenvalues.
    assert np.count_nonzero(np.abs(values - exact[-1]) < 1e-8 * exact[-1]) == 1
    residuals = np.linalg.norm(A @ vectors[:, :3] - vectors[:, :3] * values[:3], axis=0)
    assert residuals.max() < 1e-8


def test_ritz_basis_is_cached_and_read_only():
    first = _ritz_basis(10, 2, 60, 0)
    assert _ritz_basis(10, 2, 60, 0) is first
    flags, values, vectors = first
    np.testing.assert_array_equal(flags, make_scene("empty", 10, ndim=2).flags)
    assert not vectors.flags.writeable
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(values.size), atol=1e-12)


def test_ritz_samples():
    generator = get_generator("dcdm-ritz")
    config = generator.check_config(TINY_RITZ)
    assert generator.fields(config)["rhs"] == ((10, 10), np.float32)
    first = sample_of(generator, config, 0, 1)
    np.testing.assert_array_equal(first["rhs"], sample_of(generator, config, 0, 1)["rhs"])
    assert not np.array_equal(first["rhs"], sample_of(generator, config, 0, 2)["rhs"])
    flags, _, vectors = _ritz_basis(10, 2, 60, 0)
    np.testing.assert_array_equal(first["flags"], flags)
    rhs = first["rhs"].astype(np.float64)
    assert np.all(rhs[flags != FLUID] == 0)
    assert np.linalg.norm(rhs) == pytest.approx(1.0, abs=1e-6)
    # b lies in the Ritz space, with the low Ritz vectors weighted 9x on average.
    coefficients = vectors.T @ rhs[flags == FLUID]
    np.testing.assert_allclose(vectors @ coefficients, rhs[flags == FLUID], atol=1e-6)
    low = 60 // 2 + 5
    shares = np.zeros(2)
    for index in range(40):
        c = vectors.T @ sample_of(generator, config, 0, index)["rhs"][flags == FLUID]
        shares += [np.mean(c[:low] ** 2), np.mean(c[low:] ** 2)]
    assert 40 < shares[0] / shares[1] < 130  # 81 expected


def test_ritz_generate_end_to_end(tmp_path):
    pytest.importorskip("h5py")
    from physnet.datasets.store import verify_store

    path = generate(
        "dcdm-ritz", tmp_path / "ritz.h5", samples=4, progress=False, overrides=TINY_RITZ
    )
    assert verify_store(path)["splits"] == {"train": 4, "val": 0, "test": 0}


# --- dcdm-errors --------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 3, 7])
def test_errors_rhs_is_the_operator_applied_to_the_error(index):
    generator = get_generator("dcdm-errors")
    config = generator.check_config({"size": 12})
    sample = sample_of(generator, config, seed=4, index=index)
    flags, rhs, error = sample["flags"], sample["rhs"], sample["error"]
    assert flags.dtype == np.int8 and rhs.dtype == error.dtype == np.float32
    A = GridPoisson(flags)
    np.testing.assert_allclose(
        A.scatter(A @ A.gather(error.astype(np.float64))), rhs, rtol=0, atol=2e-6
    )
    assert np.linalg.norm(rhs.astype(np.float64)) == pytest.approx(1.0, rel=1e-6)
    assert not error[flags != FLUID].any() and not rhs[flags != FLUID].any()
    again = sample_of(generator, config, seed=4, index=index)
    assert all(np.array_equal(sample[k], again[k]) for k in sample)


def test_multiscale_error_spreads_energy_over_the_scales():
    flags = np.zeros((24, 24, 24), dtype=np.int8)
    flags[..., -1] = AIR
    A = GridPoisson(flags)
    norms = []
    for scale in (1, 2, 4, 8):
        error = multiscale_error(flags, [scale], np.random.default_rng(0))
        values = A.gather(error)
        assert values @ (A @ values) == pytest.approx(1.0)  # unit A-norm
        norms.append(np.linalg.norm(values))
    # The smoother the error, the more 2-norm per unit of energy (measured: 0.42 ... 2.96).
    assert np.all(np.diff(norms) > 0)
    assert norms[-1] > 5 * norms[0]


def test_errors_validation_names_the_key():
    generator = get_generator("dcdm-errors")
    with pytest.raises(ValueError, match=r"config\.scales"):
        generator.check_config({"size": 12, "scales": [0]})
    with pytest.raises(ValueError, match=r"config\.families"):
        generator.check_config({"families": ["nope"]})
