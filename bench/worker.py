"""The training child: one run in one process, so a crash, OOM, NaN or hang costs one run.

`python -m bench.worker JOB.json` is what the runner starts (JOB: the RunSpec, the store, the
MLflow run id, the run folder). `execute()` is the same run in-process, for the Optuna
studies inside their own worker processes.

A run is resumable: everything it trains lives in its run folder (checkpoints, one JSON per
finished epoch) and everything it logs lives in one MLflow run. On start it reads which
epochs that run already holds, logs the ones that are on disk but were never logged (a kill
can land between the epoch's JSON and its log call), and trains on from the newest
checkpoint. Every epoch is logged once, in one `log_batch` call; nothing runs per step.

Exit codes (and `RunOutcome.kind`): 0 finished, 1 error, 3 diverged, 4 out of memory,
5 storage (the MLflow store failed), 6 config (the generator rejected its options), 7
interrupted, 8 pruned (a study stopped it).

`EFFGAN_FAULT_INJECT` (tests only) takes comma-separated `kind[@label]`: `oom` raises a
ResourceExhaustedError before training, `sleep=S` waits S seconds after each epoch is
checkpointed and before it is logged (a window in which a test can kill the run).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import shutil
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.spec import RunSpec
from bench.tracker import REPO_ROOT, RunLogger, StoreError, record_outcome, run_tags, store_errors

DEFAULT_OUT = REPO_ROOT / "mlruns" / "runs"
EXIT_CODES = {
    "": 0,
    "error": 1,
    "diverged": 3,
    "oom": 4,
    "storage": 5,
    "config": 6,
    "interrupted": 7,
    "pruned": 8,
}
OOM_HINT = (
    "out of memory: lower batch_size or image_size, or use precision mixed_float16/mixed_bfloat16"
)
FAULT_ENV = "EFFGAN_FAULT_INJECT"
N_SAMPLES = 4  # test images per direction in the sample grids
_IN_CHILD = False  # set by main(): process-wide tweaks only where the process is ours


@dataclass
class RunOutcome:
    """How a run ended; `metrics` holds the final quality and timing figures."""

    run_id: str | None
    status: str  # FINISHED, FAILED or KILLED
    kind: str = ""  # see EXIT_CODES
    failure: str = ""
    epochs_done: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    run_dir: str = ""
    recorded: bool = True  # False when the store could not be told how the run ended

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.kind, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CallbackError(Exception):
    """Wraps an exception raised by the caller's epoch_callback, to re-raise it unchanged."""

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


def run_dir_for(run: RunSpec, out: Path | str = DEFAULT_OUT, suffix: str = "") -> Path:
    """`<out>/<spec>/<key>[-suffix]`: checkpoints, epoch JSONs and staged artifacts."""
    from bench.spec import confined

    return confined(Path(out), run.spec, run.key + (f"-{suffix}" if suffix else ""))


def prepare_run_dir(run_dir: Path, run_id: str) -> None:
    """Create the run folder; one left by another MLflow run of the same key is emptied."""
    marker = run_dir / "mlflow_run_id"
    if run_dir.exists() and (not marker.exists() or marker.read_text().strip() != run_id):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_id)


def faults(run: RunSpec) -> dict[str, str]:
    """The injected faults that apply to this run (see the module docstring)."""
    out: dict[str, str] = {}
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        what, _, label = item.strip().partition("@")
        if label and label not in (run.label, run.variant, run.config.generator):
            continue
        kind, _, value = what.partition("=")
        out[kind] = value
    return out


def epoch_metrics(result, flops_step: int, live: bool = True) -> dict[str, float]:
    """The per-epoch metrics of one EpochResult (load average only when measured now)."""
    busy = sum(result.step_times)
    metrics = dict(result.losses)
    metrics.update(
        epoch_time=result.wall_time,
        step_time_median=result.step_median,
        step_time_p90=result.step_p90,
        images_per_s=result.images_per_s,
        cpu_time=result.cpu_time,
        achieved_flops_per_s=flops_step * result.images / busy if busy else float("nan"),
    )
    if live:
        metrics["load_avg_1m"] = os.getloadavg()[0]
    if result.compile_time is not None:
        metrics["compile_time"] = result.compile_time
    return metrics


def flat_params(run: RunSpec) -> dict[str, str]:
    """The resolved config as flat MLflow params."""
    cfg = run.config
    weights = cfg.generator_options.get("weights")
    params: dict[str, Any] = {
        "generator": cfg.generator,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "steps_per_epoch": cfg.steps_per_epoch if cfg.steps_per_epoch else "all",
        "loss": cfg.loss,
        "precision": cfg.precision,
        "jit_compile": cfg.jit_compile,
        "seed": cfg.seed,
        "learning_rate": cfg.learning_rate,
        "beta_1": cfg.beta_1,
        "cycle_weight": cfg.cycle_weight,
        "identity_weight": cfg.identity_weight,
        "weights": "random" if weights is None else weights,
        "label": run.label,
        "key": run.key,
        "eval_epochs": ",".join(map(str, run.eval_epochs)),
        "fid": run.fid,
        "timeout_s": run.timeout_s,
    }
    params.update({f"gen.{k}": v for k, v in cfg.generator_options.items()})
    params.update({f"data.{k}": v for k, v in asdict(run.data).items()})
    return {k: str(v) for k, v in params.items()}


class _Run:
    """One attempt at one run: build, reconcile with the store, train, finish."""

    def __init__(self, run: RunSpec, client, run_id: str, uri: str, run_dir: Path, callback):
        self.run, self.client, self.run_id, self.uri = run, client, run_id, uri
        self.run_dir, self.user_callback = run_dir, callback
        self.faults = faults(run)
        self.phase = "store"
        self.gan = self.data = self.logger = None
        self.flops_step = 0
        self.fixed: list = []
        self.final_quality: dict[str, float | str] | None = None
        self.marks: list[tuple[int, float, float]] = []  # (epoch, time after callback, its cost)
        self.t_fit: float | None = None

    # ---- the attempt -------------------------------------------------------------------
    def go(self, extra_tags: dict | None) -> RunOutcome:
        run, cfg = self.run, self.run.config
        self.logger = logger = RunLogger(self.client, self.run_id, self.uri)
        attempts = int(logger.tags.get("effgan.attempts", "0")) + 1
        logger.set_running()
        logger.set_tags(
            {
                **run_tags(run, extra_tags),
                "effgan.status": "RUNNING",
                "effgan.attempts": attempts,
                "effgan.run_dir": str(self.run_dir),
            }
        )
        from bench.environment import collect
        from effgan.device import configure_gpus, device_kind
        from effgan.train import CycleGAN, latest_checkpoint, read_epoch_results

        configure_gpus()
        if "env.device_kind" not in logger.params:  # once per run, whatever the attempts
            logger.log_params({**flat_params(run), **collect()})
        logger.set_tags({"effgan.device_kind": device_kind()})
        self.phase = "config"
        self.gan = gan = CycleGAN(cfg)
        self.phase = "data"
        self.data = run.data.load(cfg.image_size)
        self.phase = "train"
        self._log_static()
        ckpt = latest_checkpoint(self.run_dir / "checkpoints")
        done = int(ckpt.name.split("-")[1]) if ckpt else 0
        if done:
            logger.set_tags({"effgan.resumed_from_epoch": done})
        for result in read_epoch_results(self.run_dir):  # on disk, never logged: log now
            if result.epoch <= done and result.epoch not in logger.logged_epochs:
                logger.log_metrics(epoch_metrics(result, self.flops_step, live=False), result.epoch)
                logger.logged_epochs.add(result.epoch)
        if done in sample_epochs(cfg.epochs) and not self._sample_path(done).exists():
            gan.restore(self.run_dir / "checkpoints")  # the model as that epoch left it
            self._sample(done)
        if "oom" in self.faults:
            import tensorflow as tf

            raise tf.errors.ResourceExhaustedError(
                None, None, f"OOM when allocating tensor (injected by {FAULT_ENV})"
            )
        if _IN_CHILD:  # the import-time heap (TF, MLflow) never dies: keep the GC off it
            gc.freeze()
        self.t_fit = time.perf_counter()
        gan.fit(self.data, self.run_dir, resume=True, callbacks=[self._on_epoch])
        if self.final_quality is None:  # every epoch was done before: only the end is left
            self.final_quality = self._quality(cfg.epochs, fid=run.fid)
        return self._finish()

    def _log_static(self) -> None:
        """Model sizes and FLOPs at step 0, once per run."""
        from effgan.flops import model_summary
        from effgan.train import train_step_flops

        logger, gan = self.logger, self.gan
        gen, disc = model_summary(gan.gen_ab), model_summary(gan.disc_a)
        self.flops_step = train_step_flops(gen["flops"], disc["flops"])
        if "flops_train_step" not in logger.metrics:
            logger.log_metrics(
                {
                    "params_trainable_gen": gen["trainable_params"],
                    "params_total_gen": gen["total_params"],
                    "params_trainable_disc": disc["trainable_params"],
                    "params_total_disc": disc["total_params"],
                    "flops_gen_forward": gen["flops"],
                    "flops_disc_forward": disc["flops"],
                    "flops_train_step": self.flops_step,
                },
                step=0,
            )

    def _on_epoch(self, result) -> None:
        """After each epoch's JSON and checkpoint: log it (once), evaluate, sample, report."""
        if "sleep" in self.faults:
            time.sleep(float(self.faults["sleep"] or 1))
        t0 = time.perf_counter()
        run, logger, epoch = self.run, self.logger, result.epoch
        if epoch not in logger.logged_epochs:
            logger.log_metrics(epoch_metrics(result, self.flops_step), epoch)
            logger.logged_epochs.add(epoch)
        quality: dict[str, float | str] = {}
        if epoch == run.config.epochs:
            quality = self.final_quality = self._quality(epoch, fid=run.fid)
        elif epoch in run.eval_epochs:
            quality = self._quality(epoch, fid=False)
        if epoch in sample_epochs(run.config.epochs):
            self._sample(epoch)
        self.marks.append((epoch, time.perf_counter(), time.perf_counter() - t0))
        if self.user_callback is not None:
            try:
                self.user_callback(result, {k: v for k, v in quality.items() if _is_number(v)})
            except BaseException as err:
                raise _CallbackError(err) from err

    def _quality(self, epoch: int, fid: bool) -> dict[str, float | str]:
        """Quality metrics on the test split: numbers as metrics, notes (e.g. no FID) as tags."""
        from effgan.metrics import evaluate_all

        gan = self.gan
        quality = evaluate_all(
            lambda x: gan.translate(x, "ab"),
            lambda x: gan.translate(x, "ba"),
            self.data,
            fid=fid,
            inception_weights=self.run.inception_weights,
        )
        numbers = {k: float(v) for k, v in quality.items() if _is_number(v)}
        notes = {f"effgan.{k}": v for k, v in quality.items() if not _is_number(v)}
        self.logger.log_metrics(numbers, epoch)
        if notes:
            self.logger.set_tags(notes)
        return quality

    def _sample_path(self, epoch: int) -> Path:
        return self.run_dir / "artifacts" / "samples" / f"epoch-{epoch:04d}.png"

    def _sample(self, epoch: int) -> None:
        from effgan.data.pipeline import test_images
        from effgan.samples import sample_grid

        if not self.fixed:
            d, size = self.data, self.run.config.image_size
            n = min(N_SAMPLES, len(d.test_a), len(d.test_b))
            self.fixed = [
                test_images(x[:n], size) if x is not None else None
                for x in (d.test_a, d.test_b, d.test_a_twin, d.test_b_twin)
            ]
        path = self._sample_path(epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        sample_grid(self.gan, *self.fixed).save(path)
        self.logger.log_artifact(path, "samples")

    # ---- the end -----------------------------------------------------------------------
    def _finish(self) -> RunOutcome:
        from effgan.device import peak_memory_bytes
        from effgan.train import read_epoch_results

        cfg, logger = self.run.config, self.logger
        results = [r for r in read_epoch_results(self.run_dir) if r.epoch <= cfg.epochs]
        times = [r.wall_time for r in results]
        final = {
            "peak_memory_bytes": peak_memory_bytes(),
            "total_train_time": sum(times),
            "epoch_time_mean": statistics.fmean(times),
            "epoch_time_sd": statistics.stdev(times) if len(times) > 1 else 0.0,
        }
        logger.log_metrics(final, cfg.epochs)
        self.write_artifacts(results)
        logger.log_artifacts(self.run_dir / "artifacts")
        logger.set_tags({"effgan.status": "FINISHED"})
        with_quality = {k: float(v) for k, v in (self.final_quality or {}).items() if _is_number(v)}
        with store_errors(self.uri, f"marking run {self.run_id} FINISHED"):
            self.client.set_terminated(self.run_id, status="FINISHED")
        return RunOutcome(
            self.run_id, "FINISHED", epochs_done=len(results), metrics={**final, **with_quality},
            run_dir=str(self.run_dir),
        )  # fmt: skip

    def write_artifacts(self, results: list) -> None:
        """config.json, epoch_times.csv, the loss plot and model summaries, staged on disk."""
        art = self.run_dir / "artifacts"
        for sub in ("plots", "summaries"):
            (art / sub).mkdir(parents=True, exist_ok=True)
        config = {**self.run.to_dict(), "run_id": self.run_id}
        (art / "config.json").write_text(json.dumps(config, indent=2, default=str))
        with (art / "epoch_times.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "wall_time", "step_median", "step_p90", "images_per_s",
                        "cpu_time", "compile_time"])  # fmt: skip
            for r in results:
                w.writerow([r.epoch, f"{r.wall_time:.4f}", f"{r.step_median:.5f}",
                            f"{r.step_p90:.5f}", f"{r.images_per_s:.4f}", f"{r.cpu_time:.3f}",
                            "" if r.compile_time is None else f"{r.compile_time:.3f}"])  # fmt: skip
        if results:
            plot_losses(results, art / "plots" / "losses.png")
        if self.gan is not None:
            for name, model in (("gen", self.gan.gen_ab), ("disc", self.gan.disc_a)):
                (art / "summaries" / f"{name}.txt").write_text(model_summary_text(model))
        intervals = [  # callback to callback; `harness_s`: this module's work in between
            {
                "epoch": e,
                "interval_s": t - (self.marks[i - 1][1] if i else self.t_fit or t),
                "harness_s": h,
            }
            for i, (e, t, h) in enumerate(self.marks)
        ]
        (self.run_dir / "timing.json").write_text(json.dumps(intervals, indent=2))

    def fail(self, status: str, kind: str, failure: str) -> RunOutcome:
        """Record a failed attempt: the reason on the run, and what was trained so far."""
        recorded = kind != "storage"
        if kind not in ("storage", "config") and self.gan is not None:
            try:
                from effgan.train import read_epoch_results

                self.write_artifacts(read_epoch_results(self.run_dir))
                self.logger.log_artifacts(self.run_dir / "artifacts")
            except Exception as err:  # the failure itself matters more than its plot
                print(f"bench.worker: could not store partial artifacts: {err}", file=sys.stderr)
        try:
            record_outcome(self.client, self.run_id, self.uri, status, kind, failure)
        except StoreError as err:
            recorded = False
            print(f"bench.worker: {err}", file=sys.stderr)
        epochs = len(self.logger.logged_epochs) if self.logger else 0
        return RunOutcome(
            self.run_id, status, kind, failure, epochs, {}, str(self.run_dir), recorded
        )


def sample_epochs(epochs: int) -> set[int]:
    """Sample grids at the first, middle and last epoch."""
    return {1, (epochs + 1) // 2, epochs}


def plot_losses(results: list, path: Path) -> None:
    """One small subplot per loss over the epochs (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from effgan.train import LOSS_NAMES

    cols = 4
    rows = -(-len(LOSS_NAMES) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    epochs = [r.epoch for r in results]
    for ax, name in zip(axes.flat, LOSS_NAMES, strict=False):
        ax.plot(epochs, [r.losses[name] for r in results], marker="o", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(LOSS_NAMES) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def model_summary_text(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda text, line_break=True: lines.append(text))
    return "\n".join(lines) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def execute(
    run: RunSpec,
    tracking_uri: str,
    experiment: str,
    run_id: str | None = None,
    extra_tags: dict | None = None,
    epoch_callback: Callable[[Any, dict], None] | None = None,
    run_dir: Path | str | None = None,
) -> RunOutcome:
    """Train `run` into MLflow run `run_id` (created in `experiment` when None), resuming.

    Failures of the run itself (divergence, OOM, a rejected config, a store fault, any other
    exception) are recorded and returned as the outcome. An exception raised by
    `epoch_callback` (e.g. optuna.TrialPruned) marks the run KILLED (pruned) or FAILED and
    propagates unchanged, as does KeyboardInterrupt (KILLED).
    """
    from mlflow import MlflowClient

    from bench.tracker import create_run, ensure_experiment

    client = MlflowClient(tracking_uri=tracking_uri)
    if run_id is None:
        try:
            exp_id = ensure_experiment(client, experiment, tracking_uri)
            run_id = create_run(client, exp_id, run, tracking_uri, extra_tags)
        except StoreError as err:
            return RunOutcome(None, "FAILED", "storage", str(err), recorded=False)
        default_dir = run_dir_for(run, DEFAULT_OUT, suffix=run_id[:8])
    else:
        default_dir = run_dir_for(run, DEFAULT_OUT)
    run_dir = Path(run_dir) if run_dir is not None else default_dir
    prepare_run_dir(run_dir, run_id)
    attempt = _Run(run, client, run_id, tracking_uri, run_dir, epoch_callback)
    try:
        return attempt.go(extra_tags)
    except _CallbackError as err:
        pruned = type(err.original).__name__ == "TrialPruned"
        if pruned:
            attempt.fail("KILLED", "pruned", f"pruned: {err.original}")
        else:
            attempt.fail("FAILED", "error", _describe(err.original))
        raise err.original from None
    except KeyboardInterrupt:
        attempt.fail("KILLED", "interrupted", "interrupted (SIGINT/SIGTERM)")
        raise
    except StoreError as err:
        traceback.print_exc()
        return attempt.fail(
            "FAILED", "storage", f"{err}. The store was left as it was; rerun to resume."
        )
    except Exception as err:
        traceback.print_exc()
        status, kind, failure = classify(err, attempt.phase)
        return attempt.fail(status, kind, failure)


def classify(err: BaseException, phase: str) -> tuple[str, str, str]:
    """(status, kind, failure text) for an exception raised in `phase` of a run."""
    from effgan.train import DivergenceError

    if isinstance(err, DivergenceError):
        return "FAILED", "diverged", str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError":
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        return "FAILED", "oom", f"{OOM_HINT} ({type(err).__name__}: {first})"
    if phase == "config":
        return "FAILED", "config", f"the generator rejected this config: {_describe(err)}"
    return "FAILED", "error", _describe(err)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:2000]}"


# ---- the child process -------------------------------------------------------------------
def _watch_parent(parent_pid: int) -> None:
    """End this child when the harness that started it dies (even by SIGKILL)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(EXIT_CODES["interrupted"])
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "job", type=Path, help="JSON: run, tracking_uri, experiment, run_id, run_dir"
    )
    args = parser.parse_args(argv)
    global _IN_CHILD
    _IN_CHILD = True
    job = json.loads(args.job.read_text())
    if job.get("parent_pid"):
        _watch_parent(int(job["parent_pid"]))
    signal.signal(signal.SIGTERM, _interrupt)
    run = RunSpec.from_dict(job["run"])
    run_dir = Path(job["run_dir"])
    outcome_path = Path(job.get("outcome") or run_dir / "outcome.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "worker.pid").write_text(str(os.getpid()))
    try:
        outcome = execute(
            run, job["tracking_uri"], job["experiment"], job["run_id"], run_dir=run_dir
        )
    except KeyboardInterrupt:
        outcome = RunOutcome(job["run_id"], "KILLED", "interrupted", "interrupted (SIGTERM/SIGINT)")
    except BaseException as err:  # a bug in the harness itself: still leave an outcome
        traceback.print_exc()
        outcome = RunOutcome(job["run_id"], "FAILED", "error", _describe(err), recorded=False)
    from effgan.train import write_json_atomic

    write_json_atomic(outcome_path, outcome.to_dict())
    print(f"bench.worker: {run.name} {outcome.status} {outcome.kind} {outcome.failure}".rstrip())
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
