"""The foundation: thesis parameter counts, the registry, losses, and the trainer's contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from effgan.data.base import CycleData
from effgan.discriminator import build_discriminator
from effgan.losses import discriminator_loss, generator_adversarial_loss
from effgan.registry import (
    ImageSizeError,
    UnknownGeneratorError,
    build_generator,
    list_generators,
)
from effgan.train import CycleGAN, DivergenceError, TrainConfig, latest_checkpoint


def trainable(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def tiny_data(n: int = 4, size: int = 32, seed: int = 0) -> CycleData:
    rng = np.random.default_rng(seed)
    imgs = lambda k: rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8)  # noqa: E731
    return CycleData("tiny", imgs(n), imgs(n + 1), imgs(2), imgs(2))


def test_resnet_has_the_thesis_parameter_count():
    assert trainable(build_generator("resnet", 256)) == 2_855_362


def test_patchgan_has_the_thesis_parameter_count_and_output():
    disc = build_discriminator(256)
    assert disc.count_params() == 2_766_529
    assert disc.output_shape == (None, 27, 27, 1)


def test_registry_lists_and_records_config():
    names = list_generators()
    assert {"resnet", "mobile_resnet"} <= set(names)
    model = build_generator("resnet", 32, n_blocks=2)
    assert model.effgan_config["n_blocks"] == 2
    assert model.output_shape == (None, 32, 32, 3)


def test_unknown_generator_lists_known_names():
    with pytest.raises(UnknownGeneratorError, match="known: .*resnet"):
        build_generator("resnot", 64)


def test_bad_size_names_the_multiple():
    with pytest.raises(ImageSizeError, match="multiple of 4"):
        build_generator("resnet", 30)


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(TypeError, match="n_blocks"):
        build_generator("resnet", 32, n_block=3)


def test_n_blocks_must_be_positive():
    with pytest.raises(ValueError, match="n_blocks"):
        build_generator("resnet", 32, n_blocks=0)


def test_bce_and_lsgan_losses_have_known_values():
    zeros = tf.zeros((1, 4, 4, 1))
    assert generator_adversarial_loss(zeros, "bce").numpy() == pytest.approx(np.log(2))
    assert discriminator_loss(zeros, zeros, "bce").numpy() == pytest.approx(np.log(2))
    ones = tf.ones((1, 4, 4, 1))
    assert generator_adversarial_loss(ones, "lsgan").numpy() == pytest.approx(0.0)
    assert discriminator_loss(ones, ones, "lsgan").numpy() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "field,value,match",
    [("epochs", 0, "epochs"), ("epochs", -2, "epochs"), ("loss", "wgan", "loss"),
     ("precision", "fp8", "precision"), ("generator", "nope", "known")],
)  # fmt: skip
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises((ValueError, KeyError), match=match):
        TrainConfig(**{field: value}).validate()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny CycleGAN trained 2 epochs; shared so the compile cost is paid once."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(generator_options={"n_blocks": 1}, image_size=32, epochs=2, steps_per_epoch=3)
    gan = CycleGAN(cfg)
    seen = []
    results = gan.fit(tiny_data(), out_dir=out, callbacks=[seen.append])
    return gan, cfg, out, results, seen


def test_fit_reports_each_epoch_with_separate_compile_time(trained):
    _, _, out, results, seen = trained
    assert [r.epoch for r in results] == [1, 2] == [r.epoch for r in seen]
    first, second = results
    assert first.compile_time is not None and first.compile_time > 0
    assert second.compile_time is None
    assert len(first.step_times) == 2 and len(second.step_times) == 3  # step 1 was the compile
    assert all(np.isfinite(v) for v in first.losses.values())
    assert first.images_per_s > 0
    assert json.loads((out / "epochs" / "epoch-0002.json").read_text())["epoch"] == 2


def test_checkpoint_restores_weights_and_epoch(trained):
    gan, cfg, out, _, _ = trained
    assert latest_checkpoint(out / "checkpoints").name == "epoch-0002"
    again = CycleGAN(cfg)
    assert again.restore(out / "checkpoints") == 2
    x = np.zeros((1, 32, 32, 3), np.float32)
    np.testing.assert_allclose(gan.translate(x), again.translate(x), atol=1e-6)
    # Nothing left to do: resuming a finished run trains no epoch.
    assert again.fit(tiny_data(), out_dir=out, resume=True) == []


def test_resume_continues_after_the_last_checkpoint(trained, tmp_path):
    _, cfg, out, _, _ = trained
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 3})
    gan = CycleGAN(longer)
    results = gan.fit(tiny_data(), out_dir=out, resume=True)
    assert [r.epoch for r in results] == [3]


def test_a_diverging_run_stops_naming_epoch_and_loss(tmp_path):
    cfg = TrainConfig(
        generator_options={"n_blocks": 1}, image_size=32, epochs=3, steps_per_epoch=4,
        learning_rate=1e30,
    )  # fmt: skip
    with pytest.raises(DivergenceError, match=r"at epoch 1, step \d") as err:
        CycleGAN(cfg).fit(tiny_data(), out_dir=tmp_path)
    assert err.value.loss in err.value.args[0]


def test_a_save_killed_midway_leaves_the_previous_checkpoint_loadable(trained, monkeypatch):
    gan, cfg, out, _, _ = trained
    ckpts = out / "checkpoints"
    before = latest_checkpoint(ckpts)
    real_write = gan._checkpoint.write

    def dies_midway(prefix):
        real_write(prefix)  # the files are there ...
        next(iter(Path(prefix).parent.glob("ckpt.data*"))).write_bytes(b"torn")  # ... one torn
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(gan._checkpoint, "write", dies_midway)
    gan.epoch.assign(99)
    with pytest.raises(KeyboardInterrupt):
        gan.save(ckpts)
    assert list(ckpts.glob(".tmp-epoch-0099-*")), "the torn save stays in its temporary folder"
    assert latest_checkpoint(ckpts) == before  # never promoted
    assert CycleGAN(cfg).restore(ckpts) == int(before.name.split("-")[1])
    monkeypatch.undo()
    gan.epoch.assign(int(before.name.split("-")[1]))
    gan.save(ckpts)  # the next save sweeps the torn one away
    assert not list(ckpts.glob(".tmp-epoch-*"))


def test_shared_backward_gives_the_thesis_four_call_gradients():
    """Two backward passes (generators, critics) update exactly like the thesis's four."""
    cfg = TrainConfig(generator_options={"n_blocks": 1}, image_size=32, learning_rate=1e-2)
    fused, four = CycleGAN(cfg), CycleGAN(cfg)
    four.shared_backward = False
    for name, net in fused.networks.items():
        four.networks[name].set_weights(net.get_weights())
    rng = np.random.default_rng(1)
    a, b = (tf.constant(rng.uniform(-1, 1, (1, 32, 32, 3)), tf.float32) for _ in "ab")
    np.testing.assert_allclose(
        list(fused.train_step(a, b).values()), list(four.train_step(a, b).values()), rtol=1e-5
    )
    for name, net in fused.networks.items():
        for w1, w2 in zip(net.get_weights(), four.networks[name].get_weights(), strict=True):
            np.testing.assert_allclose(w1, w2, rtol=1e-4, atol=1e-6)
