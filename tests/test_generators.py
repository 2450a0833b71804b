"""The EfficientNet generators (thesis Methods I-III) and the native EffGAN family.

Small sizes throughout (2 busy CPU cores); 256 px only where the thesis's counts are defined.
"""

from __future__ import annotations

import re

import h5py
import keras
import numpy as np
import pytest

from effgan.flops import count_flops
from effgan.generators.effgan import scaled_config
from effgan.generators.efficientnet import (
    B3_SLICE,
    IMAGENET_STDDEV_RGB,
    _b3_decoder,
    b3_normalization,
    copy_weights,
    efficientnet_b3,
    rebuild_slice,
    slice_layers,
    split_model,
)
from effgan.registry import (
    ImageSizeError,
    build_generator,
    generator_entry,
    list_generators,
)

THESIS = ("efficientnet_b3_full", "efficientnet_split_v1", "efficientnet_split_v2")
SPLITS = ("efficientnet_split_v1", "efficientnet_split_v2")
NEW = ("efficientnet_b3_full", *SPLITS, "effgan_b0", "effgan_b1", "effgan_b2", "effgan_b3")
BLOCK_LAYER = re.compile(r"eb\d+_block")


def n_trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def image(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def source_b3() -> keras.Model:
    """A seeded random B3 with non-trivial batch-norm statistics and ImageNet-style input stats."""
    keras.utils.set_random_seed(7)
    model = efficientnet_b3((None, None, 3))
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.5, 1.5, var.shape),
                ]
            )
    # What keras.applications' weight files hold: std-devs stored as variance (tf#49930).
    b3_normalization(model).set_weights(
        [np.array([0.485, 0.456, 0.406]), np.array(IMAGENET_STDDEV_RGB), np.array(0)]
    )
    return model


@pytest.fixture(scope="module")
def weight_files(source_b3, tmp_path_factory) -> dict[str, str]:
    """`source_b3` saved as a Keras 3 `.weights.h5` and as a legacy `.h5`, plus bad files."""
    from keras.src.legacy.saving import legacy_h5_format

    folder = tmp_path_factory.mktemp("weights")
    files = {
        k: str(folder / v)
        for k, v in {
            "keras3": "b3.weights.h5",
            "legacy": "b3_notop.h5",
            "wrong": "tiny.weights.h5",
            "garbage": "garbage.h5",
        }.items()
    }
    source_b3.save_weights(files["keras3"])
    with h5py.File(files["legacy"], "w") as f:  # the format of keras' efficientnetb3_notop.h5
        legacy_h5_format.save_weights_to_hdf5_group(f, source_b3)
    tiny = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    tiny.save_weights(files["wrong"])
    with open(files["garbage"], "wb") as f:
        f.write(b"not an hdf5 file")
    return files


# --- thesis parameter counts at 256 px --------------------------------------------------------


@pytest.fixture(scope="module")
def b3_full_256() -> keras.Model:
    return build_generator("efficientnet_b3_full", 256)


def test_b3_full_thesis_count(b3_full_256):
    assert n_trainable(b3_full_256) == 21_287_998
    assert n_trainable(b3_full_256.get_layer("efficientnetb3")) == 10_696_232
    decoder = [layer for layer in b3_full_256.layers if layer.name.startswith("dec")]
    assert sum(n_trainable(layer) for layer in decoder) == 10_591_766
    # The thesis's spatial path at 256 px: 8 -> 16 -> 15 -> 64 -> 32 -> 128 -> 64 -> 256.
    path = [b3_full_256.get_layer("efficientnetb3").output.shape[1]] + [
        b3_full_256.get_layer(f"dec{i}_{kind}").output.shape[1]
        for i in (1, 2, 3, 4)
        for kind in ("tconv", "pool")
        if not (i == 4 and kind == "pool")
    ]
    assert path == [8, 16, 15, 64, 32, 128, 64, 256]
    assert b3_full_256.output.shape == (None, 256, 256, 3)


@pytest.mark.parametrize("name", SPLITS)
def test_split_thesis_count(name):
    model = build_generator(name, 256)
    assert n_trainable(model) == 622_305
    block = [w for w in model.trainable_weights if w.path.startswith("eb1_")]
    reduce = model.get_layer("eb1_reduce")
    assert sum(int(np.prod(w.shape)) for w in block) - n_trainable(reduce) == 49_606
    assert n_trainable(reduce) == 27_648
    assert model.get_layer("down2_conv").output.shape[1:] == (64, 64, 144)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_b3_decoder_reaches_32n(n):
    """n -> 2n -> 2n-1 -> 8n -> 4n -> 16n -> 8n -> 32n for any n, in both decoder modes."""
    for mode in ("transpose", "resize_conv"):
        out = _b3_decoder(keras.Input((n, n, 1536)), mode, "nearest")
        assert out.shape[1:] == (32 * n, 32 * n, 3), mode


# --- every generator builds and runs at 64 px -------------------------------------------------


@pytest.mark.parametrize("name", list_generators())
def test_builds_and_runs_at_64(name):
    for mode in ("transpose", "resize_conv"):
        model = build_generator(name, 64, upsampling=mode)
        out = keras.ops.convert_to_numpy(model(image(64), training=False))
        assert out.shape == (1, 64, 64, 3), mode
        assert np.isfinite(out).all()
        assert model.effgan_config["upsampling"] == mode
        assert count_flops(model) > 0


@pytest.mark.parametrize("name", NEW)
def test_registry_metadata(name):
    entry = generator_entry(name)
    assert entry.description and "\n" not in entry.description
    assert entry.source
    assert entry.size_multiple == (32 if name == "efficientnet_b3_full" else 4)
    if name in THESIS:
        assert entry.thesis_method in ("I", "II", "III")


# --- V1 and V2 are the same network ------------------------------------------------------------


def test_slice_has_no_padding_and_keeps_resolution(source_b3):
    chosen = slice_layers(source_b3, *B3_SLICE)
    assert len(chosen) == 42
    assert not any("dwconv_pad" in layer.name for layer in chosen)
    assert sum(n_trainable(layer) for layer in chosen) == 49_606


def test_split_model_and_rebuild_slice_match_the_source(source_b3):
    """Both ways of cutting the slice compute exactly what the slice computes inside B3."""
    probe = keras.Model(
        source_b3.input,
        [source_b3.get_layer("block2a_dwconv").output, source_b3.get_layer(B3_SLICE[1]).output],
    )
    entering, expected = probe(image(32) * 127.5 + 127.5)
    split = split_model(source_b3, *B3_SLICE, name="slice", prefix="s_")
    assert split.input.shape == (None, None, None, 144)
    assert split.output.shape[-1] == 192
    assert all(layer.name.startswith("s_") for layer in split.layers)
    np.testing.assert_allclose(split(entering), expected, atol=1e-5)

    x = keras.Input((None, None, 144))
    rebuilt = keras.Model(x, rebuild_slice(x, source_b3, *B3_SLICE, "r_", True))
    np.testing.assert_allclose(rebuilt(entering), expected, atol=1e-5)
    merges = [layer for layer in rebuilt.layers if isinstance(layer, keras.layers.Multiply)]
    assert len(merges) == 3  # one squeeze-excite per block2a/2b/2c


def test_split_model_is_generic():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    c = keras.layers.Add(name="c")([b, a])  # residual back to the slice's input
    d = keras.layers.Conv2D(3, 1, name="d")(c)
    model = keras.Model(inputs, d)
    part = split_model(model, "b", "d", name="part", prefix="p_")
    x = np.random.default_rng(1).normal(size=(1, 6, 6, 4)).astype("float32")
    head = keras.Model(model.input, [a, d])
    a_out, d_out = head(np.random.default_rng(2).normal(size=(1, 6, 6, 2)).astype("float32"))
    np.testing.assert_allclose(part(a_out), d_out, atol=1e-6)
    assert part(x).shape == (1, 6, 6, 3)
    with pytest.raises(ValueError, match="exactly one input"):
        split_model(model, "c", "d", name="bad")  # c takes b and a: two tensors enter
    with pytest.raises(ValueError, match="not in the model"):
        split_model(model, "nope", "d", name="bad")


def _sampler_layers(model: keras.Model) -> list[keras.Layer]:
    return [layer for layer in model.layers if layer.weights and not BLOCK_LAYER.match(layer.name)]


def test_v1_equals_v2_from_the_same_weights_file(weight_files, source_b3):
    """Same B3 weights file + same sampler weights => same output (Methods II and III agree)."""
    v1, v2 = (build_generator(n, 32, n_blocks=1, weights=weight_files["keras3"]) for n in SPLITS)
    assert v2.effgan_config["weights"] == weight_files["keras3"]
    # Every block starts from the source's slice weights, in both versions.
    for layer in slice_layers(source_b3, *B3_SLICE):
        name = f"eb1_{layer.name}"
        for got in (v1.get_layer(name), v2.get_layer("eb1").get_layer(name)):
            for w_got, w_src in zip(got.get_weights(), layer.get_weights(), strict=True):
                np.testing.assert_array_equal(w_got, w_src)
    # Unit IN gammas so the signal is not ~0 (the thesis's N(0, 0.02) gammas make it tiny).
    for layer in v1.layers:
        if isinstance(layer, keras.layers.GroupNormalization):
            layer.set_weights(
                [np.ones_like(w) if i == 0 else w for i, w in enumerate(layer.get_weights())]
            )
    x = image(32)
    out1 = keras.ops.convert_to_numpy(v1(x, training=False))
    assert out1.std() > 1e-3
    assert not np.allclose(out1, v2(x, training=False), atol=1e-5)
    samplers = _sampler_layers(v1)
    assert len(samplers) == 5 * 2 + 1 + 1  # 5 sampler convs + their INs, 1x1 reduce, head
    for layer in samplers:
        v2.get_layer(layer.name).set_weights(layer.get_weights())
    np.testing.assert_allclose(v1(x, training=False), v2(x, training=False), atol=1e-5)


def test_v1_equals_v2_after_copy_weights():
    """Random init (each block its own weights); copy_weights moves V1's weights into V2."""
    v1 = build_generator("efficientnet_split_v1", 32, n_blocks=2)
    v2 = build_generator("efficientnet_split_v2", 32, n_blocks=2)
    k1 = v1.get_layer("eb1_block2b_expand_conv").get_weights()[0]
    k2 = v1.get_layer("eb2_block2b_expand_conv").get_weights()[0]
    assert not np.allclose(k1, k2)  # blocks do not share weights
    assert copy_weights(v1, v2) == 13 + 2 * 23  # samplers + 23 weight layers per block
    x = image(32, seed=3)
    np.testing.assert_allclose(v1(x, training=False), v2(x, training=False), atol=1e-5)


# --- weights files ------------------------------------------------------------------------------


def test_b3_full_loads_legacy_h5(weight_files, source_b3):
    model = build_generator("efficientnet_b3_full", 32, weights=weight_files["legacy"])
    backbone = model.get_layer("efficientnetb3")
    for name in ("stem_conv", "block2b_se_reduce", "top_bn"):
        for got, want in zip(
            backbone.get_layer(name).get_weights(),
            source_b3.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)
    # ImageNet std-devs stored as variance are squared, as weights="imagenet" would correct.
    variance = b3_normalization(backbone).get_weights()[1]
    np.testing.assert_allclose(variance, np.square(IMAGENET_STDDEV_RGB), rtol=1e-6)


@pytest.mark.parametrize("name", THESIS)
def test_missing_weights_file(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_generator(name, 32, weights=str(tmp_path / "nope.weights.h5"))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("efficientnet_split_v2", "wrong"), ("efficientnet_b3_full", "garbage")],
)
def test_unfit_weights_file(name, kind, weight_files):
    with pytest.raises(ValueError, match="EfficientNetB3 include_top=False"):
        build_generator(name, 32, weights=weight_files[kind])


# --- bad options --------------------------------------------------------------------------------


def test_b3_full_needs_multiple_of_32():
    with pytest.raises(ImageSizeError, match="multiple of 32"):
        build_generator("efficientnet_b3_full", 48)
    assert "multiple of 32" in generator_entry("efficientnet_b3_full").description


@pytest.mark.parametrize("name", SPLITS)
def test_split_options(name):
    with pytest.raises(ImageSizeError, match="multiple of 4"):
        build_generator(name, 66)
    with pytest.raises(ValueError, match="n_blocks"):
        build_generator(name, 32, n_blocks=0)


@pytest.mark.parametrize("name", NEW)
def test_unknown_upsampling(name):
    with pytest.raises(ValueError, match="unknown upsampling mode"):
        build_generator(name, 32, upsampling="pixel_shuffle")
    with pytest.raises(ValueError, match="interpolation"):
        build_generator(name, 32, upsampling="resize_conv", interpolation="lanczos9")


# --- EffGAN compound scaling --------------------------------------------------------------------


def test_effgan_scaling():
    configs = [scaled_config(phi) for phi in range(4)]
    assert [sum(r["repeats"] for r in rows) for _, rows in configs] == [4, 6, 7, 8]
    assert [widths["blocks"] for widths, _ in configs] == [64, 72, 80, 88]
    assert all(w % 8 == 0 for widths, _ in configs for w in widths.values())
    models = [build_generator(f"effgan_b{phi}", 32) for phi in range(4)]
    assert [m.effgan_config["phi"] for m in models] == [0, 1, 2, 3]
    params = [n_trainable(m) for m in models]
    assert params == sorted(params) and len(set(params)) == 4
    blocks = {layer.name.split("_")[0] for layer in models[3].layers if layer.name.startswith("mb")}
    assert len(blocks) == 8


def test_effgan_options():
    plain = build_generator("effgan_b0", 32, se_ratio=0.0, expand_ratio=1)
    names = [layer.name for layer in plain.layers]
    assert not any("_se_" in n or "_expand" in n for n in names)
    assert plain(image(32)).shape == (1, 32, 32, 3)
    for bad in ({"phi": -1}, {"se_ratio": 1.5}, {"expand_ratio": 0}):
        with pytest.raises(ValueError):
            build_generator("effgan_b0", 32, **bad)
