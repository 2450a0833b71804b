"""Performance measurements (issue 7): machine peak, training-step speed, data pipeline.

Every figure is a median over repeats with its spread, and every comparison is a ratio of
numbers measured in the same process: step FLOP/s against the peak of a large matmul
measured just before, the pipeline's images/s against the fastest training step's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Timing:
    """Seconds per call over repeats: median, p10/p90 and all samples."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def p10(self) -> float:
        return float(np.percentile(self.samples, 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}median_s": self.median,
            f"{prefix}p10_s": self.p10,
            f"{prefix}p90_s": self.p90,
            f"{prefix}repeats": float(len(self.samples)),
        }


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times timed."""
    for _ in range(warmup):
        fn()
    timing = Timing()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        timing.samples.append(time.perf_counter() - t0)
    return timing


def peak_matmul_flops(dtype: str = "float32", n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """The machine's practical peak: FLOP/s of a large square matmul in TensorFlow."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    timing = time_calls(lambda: matmul().numpy(), repeats, warmup=2)
    flops = 2.0 * n**3
    return {"peak_flops_per_s": flops / timing.median, "matrix_size": float(n), **timing.summary()}


def train_step_speed(
    generator: str = "resnet",
    image_size: int = 64,
    precision: str = "float32",
    repeats: int = 20,
    jit_compile: bool = False,
    **options: Any,
) -> dict[str, float]:
    """One CycleGAN training step (batch 1): median seconds, images/s and achieved FLOP/s."""
    import tensorflow as tf

    from effgan.flops import count_flops
    from effgan.train import CycleGAN, TrainConfig, train_step_flops

    cfg = TrainConfig(
        generator=generator,
        generator_options=options,
        image_size=image_size,
        precision=precision,
        jit_compile=jit_compile,
    )
    gan = CycleGAN(cfg)
    rng = np.random.default_rng(0)
    a = tf.constant(rng.uniform(-1, 1, (1, image_size, image_size, 3)), tf.float32)
    b = tf.constant(rng.uniform(-1, 1, (1, image_size, image_size, 3)), tf.float32)
    t0 = time.perf_counter()
    gan.train_step(a, b)
    compile_s = time.perf_counter() - t0
    timing = time_calls(lambda: gan._step_fn(a, b).numpy(), repeats, warmup=2)
    flops = train_step_flops(count_flops(gan.gen_ab), count_flops(gan.disc_a))
    return {
        "step_time_median": timing.median,
        "step_time_p10": timing.p10,
        "step_time_p90": timing.p90,
        "images_per_s": 1.0 / timing.median,
        "flops_train_step": float(flops),
        "achieved_flops_per_s": flops / timing.median,
        "compile_time": compile_s,
        "repeats": float(repeats),
    }


def pipeline_speed(
    image_size: int = 64, batches: int = 200, repeats: int = 5, seed: int = 0
) -> dict[str, float]:
    """Pairs/s the tf.data training pipeline delivers alone: comparable to a step's images/s.

A step consumes one (A, B) pair per batch image, and its images/s counts pairs, so the two
rates are in the same unit.
"""
    from effgan.data.cans import load_cans
    from effgan.data.pipeline import train_dataset

    data = load_cans(image_size, seed=seed)
    epochs = iter(range(1, 10_000))

    def one_pass() -> None:
        ds = train_dataset(data, image_size, 1, seed, next(epochs), None)
        assert sum(1 for _ in ds.repeat().take(batches)) == batches

    timing = time_calls(one_pass, repeats, warmup=1)
    return {"pipeline_images_per_s": batches / timing.median, **timing.summary("pass_")}
