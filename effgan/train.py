"""The CycleGAN trainer: two generators, two PatchGANs, four Adam optimisers, one compiled step.

One step follows the thesis (ch. 4.1): both generators forward, cycle and identity passes,
both discriminators on real and fake, one persistent tape, four updates. Timing is honest:
the first step of a process (tracing and compiling) is reported separately as
`compile_time` and never mixed into epoch or step times.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from effgan.data.base import CycleData
from effgan.discriminator import build_discriminator
from effgan.losses import check_loss, discriminator_loss, generator_adversarial_loss, l1
from effgan.registry import build_generator, check_image_size, generator_entry, resolve_options

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Per-epoch means of these are what the thesis logged (plus the loss parts, which are free).
LOSS_NAMES = (
    "cycle_loss_a",  # cycle weight x L1(A, G_BA(G_AB(A)))
    "cycle_loss_b",
    "cycle_loss_total",
    "gen_ab_loss_total",  # adversarial + total cycle + identity, A -> B generator
    "gen_ba_loss_total",
    "disc_a_loss",
    "disc_b_loss",
    "gen_ab_adv_loss",
    "gen_ba_adv_loss",
    "identity_loss_a",
    "identity_loss_b",
)


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the message names the epoch, step and loss."""

    def __init__(self, epoch: int, step: int, loss: str, value: float):
        self.epoch, self.step, self.loss, self.value = epoch, step, loss, value
        super().__init__(
            f"training diverged: {loss} = {value} at epoch {epoch}, step {step}. "
            "Checkpoints and metrics of the finished epochs are kept; "
            "try a lower learning rate or float32 precision."
        )


@dataclass
class TrainConfig:
    """Everything that defines a training run; a run is reproducible from this alone."""

    generator: str = "resnet"
    generator_options: dict[str, Any] = field(default_factory=dict)
    image_size: int = 64
    batch_size: int = 1
    epochs: int = 3
    steps_per_epoch: int | None = None
    loss: str = "bce"
    cycle_weight: float = 10.0
    identity_weight: float = 5.0  # 0.5 x cycle weight, as in the thesis
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    precision: str = "float32"
    jit_compile: bool = False  # XLA: 10-30% slower on CPU, often faster on GPU
    seed: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 2

    def validate(self) -> None:
        """Fail early, with a message that says what to change."""
        generator_entry(self.generator)
        check_image_size(self.generator, self.image_size)
        resolve_options(self.generator, **self.generator_options)
        check_loss(self.loss)
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        for name in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer (got {getattr(self, name)!r})")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(
                f"steps_per_epoch must be positive or None (got {self.steps_per_epoch})"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive (got {self.learning_rate})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochResult:
    """What one epoch measured. Times in seconds; `compile_time` only on a process's first epoch."""

    epoch: int
    losses: dict[str, float]
    wall_time: float
    step_times: list[float]
    images: int
    cpu_time: float
    compile_time: float | None = None

    @property
    def step_median(self) -> float:
        return float(np.median(self.step_times)) if self.step_times else math.nan

    @property
    def step_p90(self) -> float:
        return float(np.percentile(self.step_times, 90)) if self.step_times else math.nan

    @property
    def images_per_s(self) -> float:
        total = sum(self.step_times)
        return self.images / total if total else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "step_median": self.step_median,
            "step_p90": self.step_p90,
            "images_per_s": self.images_per_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochResult:
        keys = ("epoch", "losses", "wall_time", "step_times", "images", "cpu_time", "compile_time")
        return cls(**{k: d[k] for k in keys})


def _precision_policy(precision: str):
    """Set the global dtype policy for model building; returns the previous one to restore."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    return previous


class CycleGAN:
    """Two generators (A->B, B->A), two discriminators (judging A, judging B), four Adams."""

    def __init__(self, config: TrainConfig):
        config.validate()
        self.config = config
        keras.utils.set_random_seed(config.seed)
        previous = _precision_policy(config.precision)
        try:
            size, opts = config.image_size, config.generator_options
            self.gen_ab = build_generator(config.generator, size, **opts)
            self.gen_ba = build_generator(config.generator, size, **opts)
            self.disc_a = build_discriminator(size, name="disc_a")
            self.disc_b = build_discriminator(size, name="disc_b")
        finally:
            keras.config.set_dtype_policy(previous)
        self.networks = {
            "gen_ab": self.gen_ab,
            "gen_ba": self.gen_ba,
            "disc_a": self.disc_a,
            "disc_b": self.disc_b,
        }
        self.optimizers = {name: self._optimizer() for name in self.networks}
        for name, net in self.networks.items():
            self.optimizers[name].build(net.trainable_variables)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._checkpoint = tf.train.Checkpoint(
            epoch=self.epoch,
            **self.networks,
            **{f"opt_{k}": v for k, v in self.optimizers.items()},
        )
        # Two backward passes (generators, critics) instead of four: identical gradients,
        # ~10% fewer FLOPs and a smaller graph. fp16 keeps four (a loss scale per optimizer).
        self.shared_backward = config.precision != "mixed_float16"
        self._step_fn = tf.function(
            self._train_step, reduce_retracing=True, jit_compile=config.jit_compile
        )
        self._translate_fn = tf.function(
            lambda model, x: model(x, training=False), reduce_retracing=True
        )
        self._compiled = False

    def _optimizer(self) -> keras.optimizers.Optimizer:
        opt = keras.optimizers.Adam(self.config.learning_rate, beta_1=self.config.beta_1)
        if self.config.precision == "mixed_float16":
            opt = keras.optimizers.LossScaleOptimizer(opt)
        return opt

    @property
    def generator_config(self) -> dict[str, Any]:
        """The resolved generator options, e.g. which weights it started from."""
        return dict(self.gen_ab.effgan_config)

    # ---- the training step -------------------------------------------------------------
    def _train_step(self, real_a: tf.Tensor, real_b: tf.Tensor) -> tf.Tensor:
        cfg = self.config
        with tf.GradientTape(persistent=True) as tape:
            fake_b = self.gen_ab(real_a, training=True)
            fake_a = self.gen_ba(real_b, training=True)
            cycled_a = self.gen_ba(fake_b, training=True)
            cycled_b = self.gen_ab(fake_a, training=True)
            same_a = self.gen_ba(real_a, training=True)
            same_b = self.gen_ab(real_b, training=True)

            disc_real_a = self.disc_a(real_a, training=True)
            disc_real_b = self.disc_b(real_b, training=True)
            disc_fake_a = self.disc_a(fake_a, training=True)
            disc_fake_b = self.disc_b(fake_b, training=True)

            adv_ab = generator_adversarial_loss(disc_fake_b, cfg.loss)
            adv_ba = generator_adversarial_loss(disc_fake_a, cfg.loss)
            cycle_a = cfg.cycle_weight * l1(real_a, cycled_a)
            cycle_b = cfg.cycle_weight * l1(real_b, cycled_b)
            cycle_total = cycle_a + cycle_b
            identity_a = cfg.identity_weight * l1(real_a, same_a)
            identity_b = cfg.identity_weight * l1(real_b, same_b)
            gen_ab_total = adv_ab + cycle_total + identity_b
            gen_ba_total = adv_ba + cycle_total + identity_a
            disc_a = discriminator_loss(disc_real_a, disc_fake_a, cfg.loss)
            disc_b = discriminator_loss(disc_real_b, disc_fake_b, cfg.loss)
            if self.shared_backward:
                # One backward pass per side. Each generator's gradient of this sum equals
                # its own total's: the extra terms (the other direction's adversarial and
                # identity losses) do not depend on its weights. Same for the two critics.
                objectives = {
                    ("gen_ab", "gen_ba"): adv_ab + adv_ba + cycle_total + identity_a + identity_b,
                    ("disc_a", "disc_b"): disc_a + disc_b,
                }
            else:  # the thesis's four gradient calls; each fp16 optimizer scales its own loss
                objectives = {
                    ("gen_ab",): gen_ab_total,
                    ("gen_ba",): gen_ba_total,
                    ("disc_a",): disc_a,
                    ("disc_b",): disc_b,
                }
                if cfg.precision == "mixed_float16":
                    objectives = {
                        k: self.optimizers[k[0]].scale_loss(v) for k, v in objectives.items()
                    }
        for names, objective in objectives.items():
            variables = [self.networks[n].trainable_variables for n in names]
            grads = tape.gradient(objective, variables)
            for name, g, v in zip(names, grads, variables, strict=True):
                self.optimizers[name].apply_gradients(zip(g, v, strict=True))
        del tape
        values = (
            cycle_a, cycle_b, cycle_total, gen_ab_total, gen_ba_total, disc_a, disc_b,
            adv_ab, adv_ba, identity_a, identity_b,
        )  # fmt: skip
        return tf.stack([tf.cast(v, tf.float32) for v in values])

    def train_step(self, real_a: tf.Tensor, real_b: tf.Tensor) -> dict[str, float]:
        """One compiled step on a batch from each domain; the losses as floats."""
        values = self._step_fn(real_a, real_b).numpy()
        return dict(zip(LOSS_NAMES, values.tolist(), strict=True))

    # ---- inference ---------------------------------------------------------------------
    def translate(
        self, images: np.ndarray, direction: str = "ab", batch_size: int = 8
    ) -> np.ndarray:
        """Translate float32 [-1, 1] images with the A->B ('ab') or B->A ('ba') generator."""
        model = self.gen_ab if direction == "ab" else self.gen_ba
        out = [
            self._translate_fn(model, tf.constant(images[i : i + batch_size], tf.float32)).numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros_like(images)

    # ---- checkpoints -------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        """Write a checkpoint of everything atomically: a kill mid-save leaves the old ones."""
        directory = Path(directory)
        epoch = int(self.epoch.numpy())
        final = directory / f"epoch-{epoch:04d}"
        for stale in directory.glob(".tmp-epoch-*"):  # left by a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = directory / f".tmp-epoch-{epoch:04d}-{os.getpid()}"
        tmp.mkdir(parents=True)
        self._checkpoint.write(str(tmp / "ckpt"))
        (tmp / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # the rename is the commit point
        for old in sorted(directory.glob("epoch-*"))[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self, directory: Path | str) -> int:
        """Load the newest complete checkpoint under `directory`; the epoch it ended (0 if none)."""
        path = latest_checkpoint(directory)
        return 0 if path is None else self.load(path)

    def load(self, checkpoint: Path | str) -> int:
        """Load one checkpoint folder (`.../epoch-NNNN`); the epoch it ended."""
        self._checkpoint.read(str(Path(checkpoint) / "ckpt")).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    # ---- the loop ----------------------------------------------------------------------
    def fit(
        self,
        data: CycleData,
        out_dir: Path | str | None = None,
        resume: bool = False,
        callbacks: Iterable[Callable[[EpochResult], None]] = (),
        progress: Callable[[int, int, int, dict[str, float], float], None] | None = None,
    ) -> list[EpochResult]:
        """Train to `config.epochs`, checkpointing under `out_dir/checkpoints`.

        With `resume`, continues after the newest checkpoint. Each finished epoch's result
        is written to `out_dir/epochs/epoch-NNNN.json` before its checkpoint, then passed to
        every callback, so an interrupted run can be resumed without a gap in its metrics.
        """
        from effgan.data.pipeline import train_dataset

        cfg = self.config
        out = Path(out_dir) if out_dir is not None else None
        ckpt_dir = out / "checkpoints" if out else None
        start = self.restore(ckpt_dir) if (resume and ckpt_dir) else 0
        results: list[EpochResult] = []
        for epoch in range(start + 1, cfg.epochs + 1):
            dataset = train_dataset(
                data, cfg.image_size, cfg.batch_size, cfg.seed, epoch, cfg.steps_per_epoch
            )
            result = self._run_epoch(epoch, dataset, progress)
            self.epoch.assign(epoch)
            if out:
                write_json_atomic(out / "epochs" / f"epoch-{epoch:04d}.json", result.to_dict())
                if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                    self.save(ckpt_dir)
            results.append(result)
            for callback in callbacks:
                callback(result)
        return results

    def _run_epoch(self, epoch: int, dataset: tf.data.Dataset, progress) -> EpochResult:
        sums = np.zeros(len(LOSS_NAMES))
        step_times: list[float] = []
        compile_time = None
        images = 0
        steps_total = int(dataset.cardinality().numpy())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for step, (real_a, real_b) in enumerate(dataset, start=1):
            t0 = time.perf_counter()
            values = self._step_fn(real_a, real_b).numpy()  # .numpy() waits for the step
            dt = time.perf_counter() - t0
            if not np.all(np.isfinite(values)):
                bad = int(np.argmax(~np.isfinite(values)))
                raise DivergenceError(epoch, step, LOSS_NAMES[bad], float(values[bad]))
            if not self._compiled:
                # Tracing made millions of Python objects; collect and freeze them now, or a
                # full GC pass lands inside a later epoch and inflates its time by seconds.
                gc.collect()
                gc.freeze()
                self._compiled, compile_time = True, time.perf_counter() - t0
                wall0 += compile_time  # trace/compile is not part of the epoch time
                cpu0 = time.process_time()
            else:
                step_times.append(dt)
                images += int(real_a.shape[0])
            sums += values
            if progress:
                progress(
                    epoch, step, steps_total, dict(zip(LOSS_NAMES, sums / step, strict=True)), dt
                )
        n_steps = len(step_times) + (compile_time is not None)
        if n_steps == 0:
            raise RuntimeError(
                "the training data yielded no batch; is a domain smaller than the batch size?"
            )
        return EpochResult(
            epoch=epoch,
            losses={k: float(v) for k, v in zip(LOSS_NAMES, sums / n_steps, strict=True)},
            wall_time=time.perf_counter() - wall0,
            step_times=step_times,
            images=images,
            cpu_time=time.process_time() - cpu0,
            compile_time=compile_time,
        )


def latest_checkpoint(directory: Path | str | None) -> Path | None:
    """The newest complete `epoch-NNNN` checkpoint folder, or None."""
    if directory is None or not Path(directory).is_dir():
        return None
    done = [p for p in sorted(Path(directory).glob("epoch-*")) if (p / "ckpt.index").exists()]
    return done[-1] if done else None


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON via a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)


def read_epoch_results(out_dir: Path | str) -> list[EpochResult]:
    """Epoch results a (possibly interrupted) run wrote, in epoch order."""
    files = sorted((Path(out_dir) / "epochs").glob("epoch-*.json"))
    return [EpochResult.from_dict(json.loads(f.read_text())) for f in files]


def train_step_flops(gen_forward_flops: int, disc_forward_flops: int, batch_size: int = 1) -> int:
    """FLOPs of one CycleGAN training step, by convention 3 x the forward passes it makes.

    A step runs 6 generator passes per image (2 translations, 2 cycles, 2 identities) and
    4 discriminator passes (real and fake, both domains); the backward pass costs about
    twice the forward, hence the factor 3. Used for achieved FLOP/s and utilisation.
    """
    return 3 * (6 * gen_forward_flops + 4 * disc_forward_flops) * batch_size
