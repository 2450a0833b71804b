"""The data package: procedural cans, folder and .npy loaders, the tf.data pipeline.

Everything runs at 32-64 px with a handful of images: these tests share 2 busy CPU cores.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effgan.data import CycleData, DataError, cans, load_data, load_folder, load_npy
from effgan.data.cans import load_cans, render_pairs, render_scene, write_cans_folder

# ---------------------------------------------------------------------------------- cans


def test_render_is_deterministic() -> None:
    first = render_pairs(3, 32, seed=5)
    second = render_pairs(3, 32, seed=5)
    for x, y in zip(first, second, strict=True):
        assert x.tobytes() == y.tobytes()
    other = render_pairs(3, 32, seed=6)
    assert first[0].tobytes() != other[0].tobytes()


def test_render_shapes_and_sizes() -> None:
    a, b, masks = render_pairs(2, 64, seed=0)
    assert a.shape == b.shape == (2, 64, 64, 3) and a.dtype == b.dtype == np.uint8
    assert masks.shape == (2, 64, 64) and masks.dtype == bool
    with pytest.raises(DataError):
        render_pairs(1, 48, seed=0)  # not a multiple of 32


def test_twins_differ_only_inside_the_mask() -> None:
    a, b, masks = render_pairs(8, 64, seed=0)
    for img_a, img_b, mask in zip(a, b, masks, strict=True):
        assert mask.sum() > 50, "the can must be visible"
        # same background, pose, occluders and the SAME sensor noise outside the can
        assert np.array_equal(img_a[~mask], img_b[~mask])
        inside = np.abs(img_a[mask].astype(int) - img_b[mask].astype(int)).mean()
        assert inside > 30, "the label must change inside the mask"
    # sensor noise is there, and it is the same noise in both twins
    params = cans.draw_scene(cans.scene_rng(0, "pairs", 0))
    noisy, mask = render_scene({**params, "noise": 0.02}, "A", 64)
    clean, _ = render_scene({**params, "noise": 0.0}, "A", 64)
    assert np.abs(noisy[~mask].astype(int) - clean[~mask].astype(int)).mean() > 1


def test_domain_colours_are_red_and_blue() -> None:
    a, b, masks = render_pairs(6, 64, seed=1)
    mean_a = a[masks].astype(float).mean(axis=0)
    mean_b = b[masks].astype(float).mean(axis=0)
    assert mean_a[0] > mean_a[2] + 40  # cola: red
    assert mean_b[2] > mean_b[0] + 40  # pepsi-style: blue


def test_mask_excludes_occluders() -> None:
    for i in range(40):  # find a scene with occluders in front of the can
        params = cans.draw_scene(cans.scene_rng(0, "pairs", i))
        if params["occluders"]:
            break
    else:
        pytest.fail("no scene with occluders in 40 draws")
    _, mask = render_scene(params, "A", 64)
    _, unoccluded = render_scene({**params, "occluders": []}, "A", 64)
    assert mask.sum() < unoccluded.sum() and not (mask & ~unoccluded).any()


def test_train_domains_come_from_independent_scenes(tmp_path: Path) -> None:
    data = load_cans(32, n_train_a=3, n_train_b=3, n_test=1, seed=0, cache_dir=tmp_path)
    for i in range(3):
        scene_a = cans.draw_scene(cans.scene_rng(0, "trainA", i))
        scene_b = cans.draw_scene(cans.scene_rng(0, "trainB", i))
        assert scene_a != scene_b
        assert np.array_equal(data.train_a[i], render_scene(scene_a, "A", 32)[0])
        assert np.array_equal(data.train_b[i], render_scene(scene_b, "B", 32)[0])
        # train B is not simply the twin of train A
        assert not np.array_equal(data.train_b[i], render_scene(scene_a, "B", 32)[0])


def test_load_cans_splits_and_twins(tmp_path: Path) -> None:
    data = load_cans(32, n_train_a=4, n_train_b=3, n_test=2, seed=2, cache_dir=tmp_path)
    assert (len(data.train_a), len(data.train_b), len(data.test_a), len(data.test_b)) == (
        4, 3, 2, 2,
    )  # fmt: skip
    assert data.has_ground_truth and data.image_size == 32
    for image, twin, mask in (
        (data.test_a, data.test_a_twin, data.test_a_mask),
        (data.test_b, data.test_b_twin, data.test_b_mask),
    ):
        assert twin.shape == image.shape and mask.shape == image.shape[:3]
        assert np.array_equal(image[~mask], twin[~mask])
    # test A and test B are different scenes
    assert not np.array_equal(data.test_a, data.test_b_twin)


def test_cache_round_trip_is_byte_identical(tmp_path: Path) -> None:
    kwargs = dict(n_train_a=3, n_train_b=2, n_test=1, seed=7, cache_dir=tmp_path)
    first = load_cans(32, **kwargs)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    cached_bytes = files[0].read_bytes()
    again = load_cans(32, **kwargs)  # from the cache
    files[0].unlink()
    rerendered = load_cans(32, **kwargs)  # rendered anew, cache rewritten
    assert files[0].read_bytes() == cached_bytes
    for name in ("train_a", "train_b", "test_a", "test_b", "test_a_twin", "test_a_mask"):
        ref = getattr(first, name)
        assert getattr(again, name).tobytes() == ref.tobytes()
        assert getattr(rerendered, name).tobytes() == ref.tobytes()
    for junk in (b"not an npz", cached_bytes[: len(cached_bytes) // 2]):
        files[0].write_bytes(junk)  # a corrupt or truncated cache is rendered again
        assert load_cans(32, **kwargs).train_a.tobytes() == first.train_a.tobytes()
        assert files[0].read_bytes() == cached_bytes


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFGAN_CACHE", str(tmp_path / "env_cache"))
    load_cans(32, n_train_a=1, n_train_b=1, n_test=1, seed=0)
    assert len(list((tmp_path / "env_cache").glob("cans_*.npz"))) == 1


def test_preview(tmp_path: Path) -> None:
    path = cans.save_preview(tmp_path / "p.png", n=2, size=32, seed=0)
    assert Image.open(path).size == (96, 64)


# ---------------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def cans_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cans_folder(tmp_path_factory.mktemp("cans") / "ds", count=5, size=32, seed=0)


def test_write_cans_folder_layout(cans_folder: Path) -> None:
    for sub, n in [("trainA", 5), ("trainB", 5), ("testA", 1), ("testB", 1),
                   ("testA_twin", 1), ("testB_twin", 1), ("testA_mask", 1), ("testB_mask", 1)]:  # fmt: skip
        assert len(list((cans_folder / sub).glob("*.png"))) == n, sub
    mask = np.asarray(Image.open(cans_folder / "testA_mask" / "00000.png"))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}


def test_write_cans_folder_rerun_removes_stale_images(tmp_path: Path) -> None:
    write_cans_folder(tmp_path, count=6, size=32, seed=0)
    (tmp_path / "trainA" / "mine.png").write_bytes(b"kept")
    write_cans_folder(tmp_path, count=2, size=32, seed=0)
    assert sorted(p.name for p in (tmp_path / "trainA").iterdir()) == [
        "00000.png",
        "00001.png",
        "mine.png",
    ]
    assert len(list((tmp_path / "testA").iterdir())) == 1


def test_load_folder_matches_rendered_arrays(cans_folder: Path, tmp_path: Path) -> None:
    data = load_folder(cans_folder, 32)
    ref = load_cans(32, n_train_a=5, n_train_b=5, n_test=1, seed=0, cache_dir=tmp_path)
    for name in ("train_a", "train_b", "test_a", "test_b", "test_a_twin", "test_b_twin",
                 "test_a_mask", "test_b_mask"):  # fmt: skip
        assert np.array_equal(getattr(data, name), getattr(ref, name)), name
    assert load_folder(cans_folder, 64).train_a.shape == (5, 64, 64, 3)


def test_load_folder_skips_a_corrupt_file_with_one_warning(
    cans_folder: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ds"
    for sub in ("trainA", "trainB"):
        (root / sub).mkdir(parents=True)
        for p in (cans_folder / sub).glob("*.png"):
            (root / sub / p.name).write_bytes(p.read_bytes())
    (root / "trainA" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "trainA" / "zz_empty.jpg").write_bytes(b"")
    (root / "trainA" / "notes.txt").write_text("not an image extension: ignored")
    with pytest.warns(UserWarning) as record:
        data = load_folder(root, 32)
    skipped = [str(w.message) for w in record if "unreadable" in str(w.message)]
    assert len(skipped) == 1
    assert "zz_corrupt.png" in skipped[0] and "zz_empty.jpg" in skipped[0]
    assert "skipped 2" in skipped[0]
    # no testA/testB: the last 10% (here 1 image) of train becomes the test set
    assert any("test set" in str(w.message) for w in record)
    assert len(data.train_a) == 4 and len(data.test_a) == 1 and not data.has_ground_truth


def test_load_folder_missing_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nope", 32)
    (tmp_path / "trainA").mkdir()
    with pytest.raises(DataError, match="trainB.*expected layout"):
        load_folder(tmp_path, 32)


def test_load_folder_empty_domain(tmp_path: Path) -> None:
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainB").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "trainA" / "a.png")
    (tmp_path / "testA").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "testA" / "a.png")
    with pytest.raises(DataError, match="trainB"):
        load_folder(tmp_path, 32)
    (tmp_path / "trainB" / "bad.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="bad.png"), pytest.raises(DataError, match="trainB"):
        load_folder(tmp_path, 32)


def test_load_folder_converts_modes_and_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainB").mkdir()
    rgb = Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    rgb.convert("L").save(tmp_path / "trainA" / "gray.png")
    rgb.convert("RGBA").save(tmp_path / "trainA" / "rgba.png")
    rgb.convert("P").save(tmp_path / "trainA" / "palette.bmp")
    rgb.save(tmp_path / "trainA" / "photo.JPG")
    rgb.save(tmp_path / "trainA" / "photo.webp")
    Image.new("LA", (20, 10)).save(tmp_path / "trainB" / "la.png")
    rgb.save(tmp_path / "trainB" / "actually_png.jpg", format="PNG")  # wrong but readable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "no test folder" notice
        data = load_folder(tmp_path, 32)
    assert len(data.train_a) + len(data.test_a) == 5
    assert len(data.train_b) + len(data.test_b) == 2
    for x in (data.train_a, data.train_b, data.test_a, data.test_b):
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
    gray = data.train_a[0]  # files sorted: gray.png comes first
    assert np.array_equal(gray[..., 0], gray[..., 2])


# ---------------------------------------------------------------------------------- npy


def test_npy_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {n: rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
              for n, k in [("trainA", 4), ("trainB", 3), ("testA", 2), ("testB", 1)]}  # fmt: skip
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    data = load_npy(tmp_path, 32)
    assert np.array_equal(data.train_a, arrays["trainA"])
    assert np.array_equal(data.train_b, arrays["trainB"])
    assert np.array_equal(data.test_a, arrays["testA"])
    assert np.array_equal(data.test_b, arrays["testB"])


def test_npy_thesis_names_resize_and_fallback(tmp_path: Path) -> None:
    np.save(tmp_path / "train_coke.npy", np.zeros((10, 48, 48, 3), np.uint8))
    np.save(tmp_path / "train_pepsi.npy", np.full((5, 48, 48, 3), 200, np.uint8))
    with pytest.warns(UserWarning, match="test set"):
        data = load_npy(tmp_path, 32)
    assert data.train_a.shape == (9, 32, 32, 3) and data.test_a.shape == (1, 32, 32, 3)
    assert data.train_b.shape == (4, 32, 32, 3) and (data.train_b == 200).all()


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((2, 8, 8), np.uint8), "shape"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no image"),
        (np.array([{"a": 1}], dtype=object), "numeric"),
    ],
)
def test_npy_validation(tmp_path: Path, array: np.ndarray, match: str) -> None:
    np.save(tmp_path / "trainA.npy", array, allow_pickle=True)
    np.save(tmp_path / "trainB.npy", np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=match):
        load_npy(tmp_path, 8)


def test_npy_missing_and_corrupt(tmp_path: Path) -> None:
    np.save(tmp_path / "trainA.npy", np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="trainB.npy or train_pepsi.npy"):
        load_npy(tmp_path, 8)
    (tmp_path / "trainB.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="trainB.npy"):
        load_npy(tmp_path, 8)


# ---------------------------------------------------------------------------------- load_data


def test_load_data_dispatch(tmp_path: Path, cans_folder: Path) -> None:
    data = load_data("cans", 32, seed=1, n_train_a=2, n_train_b=2, n_test=1, cache_dir=tmp_path)
    assert data.name == "cans" and data.has_ground_truth
    assert load_data(cans_folder, 32).train_a.shape == (5, 32, 32, 3)
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    for name in ("trainA", "trainB", "testA", "testB"):
        np.save(npy_dir / f"{name}.npy", np.zeros((2, 32, 32, 3), np.uint8))
    assert load_data(str(npy_dir), 32).train_b.shape == (2, 32, 32, 3)
    with pytest.raises(DataError, match="accepted data sources"):
        load_data(tmp_path / "missing", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cans.*trainA.*npy"):
        load_data(tmp_path / "empty", 32)


# ---------------------------------------------------------------------------------- pipeline


def _small_data(n_a: int = 5, n_b: int = 3, size: int = 32) -> CycleData:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n_a, size, size, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (n_b, size, size, 3), dtype=np.uint8)
    return CycleData("toy", a, b, a[:1], b[:1])


def _batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(a.numpy(), b.numpy()) for a, b in ds]


def test_pipeline_shapes_range_and_epoch_length() -> None:
    from effgan.data.pipeline import train_dataset

    data = _small_data(n_a=5, n_b=3)
    batches = _batches(train_dataset(data, 32, batch_size=1, seed=0))
    assert len(batches) == 3  # stops at the shorter domain
    for a, b in batches:
        for x in (a, b):
            assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32
            assert x.min() >= -1.0 and x.max() <= 1.0
    assert len(_batches(train_dataset(data, 32, batch_size=2))) == 1  # drop_remainder
    assert len(_batches(train_dataset(data, 32, steps=2))) == 2
    # augmentation: random crops of the 36-px resize, so not just the scaled input
    a0 = batches[0][0][0]
    assert not any(np.allclose(a0, img / 127.5 - 1, atol=1e-3) for img in data.train_a)


def test_pipeline_is_reproducible_per_seed_and_epoch() -> None:
    from effgan.data.pipeline import train_dataset

    data = _small_data(n_a=4, n_b=4)
    first = _batches(train_dataset(data, 32, seed=3, epoch=2))
    again = _batches(train_dataset(data, 32, seed=3, epoch=2))
    later = _batches(train_dataset(data, 32, seed=3, epoch=3))
    for (a1, b1), (a2, b2) in zip(first, again, strict=True):
        assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(first, later, strict=True))


def test_pipeline_is_fast() -> None:
    """>= 10x what training consumes (one image pair per ~0.1 s step), with a wide margin."""
    import time

    from effgan.data.pipeline import train_dataset

    data = _small_data(n_a=64, n_b=64, size=64)
    ds = train_dataset(data, 64, batch_size=1)
    next(iter(ds))  # warm-up: tracing the map function
    start = time.perf_counter()
    n = sum(int(a.shape[0]) + int(b.shape[0]) for a, b in ds)
    assert n / (time.perf_counter() - start) > 100, "images per second"


def test_test_images_and_to_uint8_round_trip() -> None:
    from effgan.data import pipeline

    images = _small_data(size=32).train_a
    x = pipeline.test_images(images, 32)
    assert x.dtype == np.float32 and x.shape == images.shape
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(pipeline.to_uint8(x), images)
    assert pipeline.test_images(images, 64).shape == (5, 64, 64, 3)
