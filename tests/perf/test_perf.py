"""The perf suite (pytest-benchmark): `nox -s perf`; skipped in the normal test run.

Compare two commits with `pytest tests/perf --benchmark-only --benchmark-compare`.
Each benchmark requests the `benchmark` fixture first, so `--benchmark-skip` skips it
before any model is built.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from effgan.registry import build_generator, generator_entry, list_generators

SIZE = 64
THESIS_GENERATORS = ["resnet", "efficientnet_b3_full", "efficientnet_split_v1", "efficientnet_split_v2"]


def _one_per_family() -> list[str]:
    seen: dict[str, str] = {}
    for name in list_generators():
        seen.setdefault(generator_entry(name).family, name)
    return sorted(seen.values())


@pytest.mark.parametrize("name", _one_per_family())
def test_generator_forward(benchmark, name):
    model = build_generator(name, SIZE)
    forward = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, SIZE, SIZE, 3)), tf.float32)
    forward(x)  # trace outside the timing
    benchmark(lambda: forward(x).numpy())


@pytest.mark.parametrize("name", THESIS_GENERATORS)
def test_train_step(benchmark, name):
    from effgan.train import CycleGAN, TrainConfig

    gan = CycleGAN(TrainConfig(generator=name, image_size=SIZE))
    rng = np.random.default_rng(0)
    a, b = (tf.constant(rng.uniform(-1, 1, (1, SIZE, SIZE, 3)), tf.float32) for _ in "ab")
    gan.train_step(a, b)  # compile outside the timing
    benchmark.pedantic(lambda: gan.train_step(a, b), rounds=10, warmup_rounds=1)


def test_data_pipeline(benchmark):
    from effgan.data.cans import load_cans
    from effgan.data.pipeline import train_dataset

    data = load_cans(SIZE)

    def one_epoch():
        return sum(1 for _ in train_dataset(data, SIZE, 1, 0, 1, None))

    assert benchmark.pedantic(one_epoch, rounds=3, warmup_rounds=1) == min(len(data.train_a), len(data.train_b))
