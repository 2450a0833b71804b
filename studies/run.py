"""Running a study: create it once, then W workers share one trial budget.

Why this shape:
- The study (and the storage schema) is created once, by the parent, before any worker starts:
  concurrent schema creation crashes on both SQLite and PostgreSQL. The MLflow store too.
- Workers are separate processes (`python -m studies worker`), so a crash, an OOM or a SIGKILL
  costs one trial, never the study. Another machine joins by running the same `run` command
  against the same storage URL.
- The budget is counted in the storage, not per worker: a worker starts a trial only while
  fewer than N "logical" trials exist (finished, running or queued; a trial retried after a
  lost heartbeat counts once). A worker with nothing left to start waits while other trials
  are still RUNNING, so that if their worker died, the lost heartbeat is noticed and the retry
  is run here instead of being left behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.spec import SpecError, StudySpec, run_spec
from studies.storage import (
    StorageError,
    describe_error,
    fail_stale_trials,
    is_storage_error,
    normalize_url,
    open_storage,
    quiet_experimental,
    redact,
    storage_cause,
)
from studies.storage import (
    kind as storage_kind,
)
from studies.tracking import RUN_ID_ATTR, TrialRunCallback, TrialRuns, system_attrs

log = optuna.logging.get_logger("studies")
STORAGE_ENV = "EFFGAN_STUDY_STORAGE"  # children get the URL here, not in argv (ps shows argv)
EXECUTE_ENV = "EFFGAN_STUDY_EXECUTE"  # tests only: module:function replacing the trainer
MAX_CONSECUTIVE_FAILURES = 3
EXIT_STORAGE = 3
EXIT_FAILURES = 4
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

Execute = Callable[..., Any]


class TrialFailed(RuntimeError):
    """The harness run failed or did not produce an objective metric."""


# ----------------------------------------------------------------------------- the study


def make_sampler(spec: StudySpec, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. Parallel workers get distinct seeds, or they would propose the
    same points; such a study is not reproducible anyway (trial order depends on timing)."""
    opts = {k: v for k, v in spec.raw.get("sampler", {}).items() if k not in ("name", "seed")}
    seed = spec.seed if spec.seed is None or worker == 0 else spec.seed * 1000 + worker
    cls = {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
    }[spec.sampler]
    try:
        with quiet_experimental():  # TPE's multivariate/group are "experimental" since 2.2
            return cls(seed=seed, **opts)
    except TypeError as e:
        raise SpecError(f"[sampler] {spec.sampler}: {e}") from None


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    cls = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    }[spec.pruner]
    try:
        return cls(**spec.pruner_options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"[pruner] {spec.pruner}: {e}") from None


def create_study(
    spec: StudySpec, storage: optuna.storages.BaseStorage, worker: int = 0
) -> optuna.Study:
    """Create the study or load it, refusing a study created from a different spec."""
    sampler, pruner = make_sampler(spec, worker), make_pruner(spec)
    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            directions=spec.directions,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        existing = [d.name.lower() for d in study.directions]
        if existing != spec.directions:
            raise SpecError(
                f"study {spec.name!r} exists with directions {existing}, but the spec asks for "
                f"{spec.directions}; give the study another name"
            )
        fingerprint = study.user_attrs.get("effgan.fingerprint")
        if fingerprint is None:
            study.set_user_attr("effgan.fingerprint", spec.fingerprint)
            study.set_user_attr("effgan.metrics", spec.metrics)
            study.set_user_attr("effgan.spec", str(spec.path) if spec.path else "")
        elif fingerprint != spec.fingerprint:
            raise SpecError(
                f"study {spec.name!r} in this storage was created from a different spec "
                f"(search space, objectives, data or training budget changed). Give the study "
                "another [study] name, or use another storage."
            )
    except (SpecError, StorageError):
        raise
    except Exception as e:
        if is_storage_error(e):
            url = str(getattr(storage, "url", ""))
            raise StorageError(describe_error(storage_cause(e) or e, url)) from e
        raise
    return study


@dataclass
class Budget:
    """How much of the study's trial budget is used, counted from the storage."""

    consumed: int  # logical trials: finished, running or queued (a retried failure counts once)
    finished: int
    running: int
    waiting: int
    complete: int

    def left(self, n_trials: int) -> int:
        return max(0, n_trials - self.consumed)


def budget(study: optuna.Study, before: int | None = None) -> Budget:
    """Count the budget; with `before`, only trials numbered below it (see `Objective`)."""
    trials = study.get_trials(deepcopy=False)
    if before is not None:
        trials = [t for t in trials if t.number < before]
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counted = [
        t
        for t in trials
        if not (
            t.state == TrialState.FAIL
            and (
                t.number in retried
                or t.user_attrs.get("effgan.interrupted")
                or t.user_attrs.get("effgan.surplus")
            )
        )
    ]
    return Budget(
        consumed=len(counted),
        finished=sum(t.state in FINISHED for t in counted),
        running=sum(t.state == TrialState.RUNNING for t in counted),
        waiting=sum(t.state == TrialState.WAITING for t in counted),
        complete=sum(t.state == TrialState.COMPLETE for t in counted),
    )


# ----------------------------------------------------------------------------- one trial


def suggest(spec: StudySpec, trial: optuna.trial.Trial) -> dict[str, Any]:
    """Sample a design: the generator first, then only that generator's parameters."""
    values: dict[str, Any] = {}
    if len(spec.generators) > 1:
        values["generator"] = trial.suggest_categorical("generator", list(spec.generators))
    generator = values.get("generator", spec.generators[0])
    for p in spec.params_for(generator):
        values[p.path] = p.suggest(trial)
    return values


def outcome_metrics(outcome: Any) -> dict[str, float]:
    """The final metrics of a harness RunOutcome (a dataclass or a dict)."""
    if isinstance(outcome, dict):
        return dict(outcome.get("metrics", outcome))
    for name in ("metrics", "final_metrics", "quality"):
        value = getattr(outcome, name, None)
        if isinstance(value, dict):
            return dict(value)
    return {}


def outcome_failure(outcome: Any) -> str | None:
    """The failure message of a RunOutcome that did not finish, else None."""
    status = getattr(outcome, "status", None) or (
        outcome.get("status") if isinstance(outcome, dict) else None
    )
    if status in (None, "FINISHED", "finished", "ok", "OK"):
        return None
    reason = getattr(outcome, "failure", None) or getattr(outcome, "error", None)
    return f"run {status}: {reason or 'no reason given'}"


class EpochReporter:
    """execute()'s epoch callback: intermediate values for the dashboard and the pruner."""

    def __init__(self, spec: StudySpec, trial: optuna.trial.Trial):
        self.spec, self.trial = spec, trial
        self.metric = spec.metrics[0]
        self.enabled = not spec.multi_objective  # Optuna cannot report multi-objective values
        self.times: list[float] = []

    def value(self, result: Any, quality: dict[str, float]) -> float | None:
        if self.metric in quality:
            return float(quality[self.metric])
        if self.metric == "epoch_time_mean":
            self.times.append(float(result.wall_time))
            return sum(self.times) / len(self.times)
        return None

    def __call__(self, result: Any, quality: dict[str, float]) -> None:
        if not self.enabled:
            return
        value = self.value(result, quality or {})
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, int(result.epoch))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {result.epoch}: {self.metric} = {value:.4g}")


def default_run_root() -> Path:
    """Trial run folders (checkpoints, epoch JSONs) go where the harness keeps its runs."""
    from bench.worker import DEFAULT_OUT

    return Path(DEFAULT_OUT)


def default_execute() -> Execute:
    """bench.worker.execute; `$EFFGAN_STUDY_EXECUTE=module:function` swaps in another (tests
    use a stand-in trainer to exercise many worker processes within a CPU budget)."""
    target = os.environ.get(EXECUTE_ENV)
    if target:
        import importlib

        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)
    from bench.worker import execute

    return execute


class SurplusTrial(RuntimeError):
    """Another worker took the last slot of the budget between our check and our ask."""


class Objective:
    """One trial = one harness run, logged to the study's MLflow experiment.

    Workers check the budget before asking for a trial, but two can pass that check at once.
    Trial numbers are unique, so the trial re-checks itself first: if N trials numbered
    below it already use the budget, it is a surplus and ends at once (FAIL, tagged
    `effgan.surplus`, not counted), so the study never trains more than N designs.
    """

    def __init__(
        self,
        spec: StudySpec,
        tracking_uri: str,
        runs: TrialRuns,
        execute: Execute,
        run_root: Path | None = None,
        n_trials: int | None = None,
    ):
        self.spec, self.tracking_uri, self.runs, self.execute = spec, tracking_uri, runs, execute
        self.n_trials = n_trials or spec.n_trials
        self.run_root = Path(run_root) if run_root else default_run_root()

    def __call__(self, trial: optuna.trial.Trial) -> float | tuple[float, ...]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except SurplusTrial:
            trial.set_user_attr("effgan.surplus", True)
            raise
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                trial.set_user_attr("effgan.interrupted", True)  # not counted in the budget
            raise
        except Exception as e:
            if not is_storage_error(e):
                with contextlib.suppress(Exception):  # the dashboard and the report show it
                    trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:2000])
            raise

    def _run(self, trial: optuna.trial.Trial) -> float | tuple[float, ...]:
        is_retry = "failed_trial" in system_attrs(trial)
        if not is_retry and budget(trial.study, before=trial.number).consumed >= self.n_trials:
            raise SurplusTrial(f"the budget of {self.n_trials} trials was already used")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if is_retry:  # the retry copied the dead trial's user attrs; its run is not ours
            trial.set_user_attr(RUN_ID_ATTR, None)
        values = suggest(self.spec, trial)
        label = f"{self.spec.name}/trial-{trial.number:04d}"
        try:
            run = run_spec(self.spec, values, label)
        except SpecError as e:
            raise TrialFailed(f"invalid design {values}: {e}") from None
        run_id = self.runs.start_run(trial, values, run)
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        trial.set_user_attr("run_key", run.key)
        outcome = self.execute(
            run,
            self.tracking_uri,
            self.spec.experiment,
            run_id,
            extra_tags=self.runs.tags(trial),
            epoch_callback=EpochReporter(self.spec, trial),
            run_dir=self.run_root / run.spec / f"trial-{trial.number:04d}-{run_id[:8]}",
        )
        failure = outcome_failure(outcome)
        if failure:
            raise TrialFailed(failure)
        # Sizes and FLOPs are logged at step 0, not returned: read the run for those.
        metrics = {**self.runs.logged_metrics(run_id), **outcome_metrics(outcome)}
        result = []
        for m in self.spec.metrics:
            v = metrics.get(m)
            if v is None or not math.isfinite(float(v)):
                raise TrialFailed(
                    f"run finished without a finite {m!r} (got {v!r}); metrics it logged: "
                    f"{', '.join(sorted(metrics)) or 'none'}"
                )
            result.append(float(v))
        return result[0] if len(result) == 1 else tuple(result)


class _LastTrial:
    """Optuna callback that remembers the trial this worker just finished."""

    def __init__(self) -> None:
        self.trial: FrozenTrial | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.trial = trial


# ----------------------------------------------------------------------------- a worker


def work(
    spec: StudySpec,
    storage_url: str,
    tracking_uri: str,
    n_trials: int,
    worker: int = 0,
    execute: Execute | None = None,
    poll_s: float | None = None,
    run_root: Path | None = None,
) -> int:
    """Run trials until the study's budget is used; returns an exit code (0 = fine)."""
    runs = TrialRuns(tracking_uri, spec.name, spec.experiment, spec.metrics)
    storage = open_storage(storage_url, spec.storage, on_stale=runs.mark_stale)
    study = create_study(spec, storage, worker)
    objective = Objective(
        spec, tracking_uri, runs, execute or default_execute(), run_root, n_trials
    )
    last = _LastTrial()
    callbacks = [TrialRunCallback(runs), last]
    poll_s = poll_s or max(1.0, spec.storage.heartbeat_interval / 2)
    heartbeat = storage_kind(normalize_url(storage_url)) != "journal"
    failures = 0
    who = f"worker {worker} (pid {os.getpid()})"
    try:
        while True:
            fail_stale_trials(study)  # a dead worker's trial: fail + requeue
            b = budget(study)
            if b.waiting == 0 and b.left(n_trials) == 0:
                if b.running == 0 or not heartbeat:
                    break  # without heartbeats a dead worker's trial can never be retried
                time.sleep(poll_s)  # others still train; be here to retry if their worker dies
                continue
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
            failed = (
                last.trial is not None
                and last.trial.state == TrialState.FAIL
                and not last.trial.user_attrs.get("effgan.surplus")
            )
            failures = failures + 1 if failed else 0
            if failures >= MAX_CONSECUTIVE_FAILURES:
                reason = last.trial.user_attrs.get("fail_reason")
                print(
                    f"{who}: {failures} trials in a row failed (last: {reason}); stopping this "
                    "worker so it does not use up the budget. Fix the cause and rerun to resume.",
                    file=sys.stderr,
                )
                return EXIT_FAILURES
    except KeyboardInterrupt:
        print(f"{who}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:
        if not is_storage_error(e):
            raise
        print(
            f"{who}: {describe_error(storage_cause(e) or e, normalize_url(storage_url))} "
            "Finished trials are kept; "
            "rerun the same command to resume (a trial cut off here is failed after the "
            f"heartbeat grace period, {spec.storage.grace_period} s, and retried).",
            file=sys.stderr,
        )
        return EXIT_STORAGE
    return 0


# ----------------------------------------------------------------------------- the parent


def prepare(spec: StudySpec, storage_url: str, tracking_uri: str) -> optuna.Study:
    """Everything that must happen once, before workers: study, MLflow store, experiment."""
    from studies.tracking import ensure_experiment, ensure_store

    runs = TrialRuns(tracking_uri, spec.name, spec.experiment, spec.metrics)
    storage = open_storage(storage_url, spec.storage, on_stale=runs.mark_stale)
    study = create_study(spec, storage)
    ensure_store(tracking_uri)
    ensure_experiment(tracking_uri, spec.experiment)
    try:
        fail_stale_trials(study)  # left over from a killed earlier run
    except Exception as e:
        if is_storage_error(e):
            cause = storage_cause(e) or e
            raise StorageError(describe_error(cause, normalize_url(storage_url))) from e
        raise
    return study


def run_study(
    spec: StudySpec,
    storage_url: str | None,
    tracking_uri: str,
    n_trials: int | None = None,
    workers: int = 1,
    log_dir: Path | None = None,
    gpus: list[str] | None = None,
    execute: Execute | None = None,
    run_root: Path | None = None,
) -> int:
    """Create the study once, run `workers` worker processes, print progress; an exit code.

    One worker runs in this process (no extra TensorFlow start-up); more run as children,
    each logging to `<log_dir>/<study>.w<i>.log`.
    """
    url = normalize_url(storage_url)
    n = n_trials or spec.n_trials
    study = prepare(spec, url, tracking_uri)
    print(
        f"study {spec.name!r}: {n} trials, {workers} worker(s), storage {redact(url)}, "
        f"MLflow {redact(tracking_uri)} experiment {spec.experiment!r}"
    )
    if workers <= 1:
        code = work(spec, url, tracking_uri, n, execute=execute, run_root=run_root)
    else:
        code = _run_children(spec, url, tracking_uri, n, workers, study, log_dir, gpus, run_root)
    return _summarise(study, n, code)


def _run_children(spec, url, tracking_uri, n, workers, study, log_dir, gpus, run_root) -> int:
    if log_dir is None:
        log_dir = Path(spec.path).parent if spec.path else Path.cwd()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[int, subprocess.Popen, Path]] = []
    for i in range(workers):
        env = {**os.environ, STORAGE_ENV: url, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        cmd = [sys.executable, "-m", "studies", "worker", "--spec", str(spec.path)]
        cmd += ["--tracking-uri", tracking_uri, "--n-trials", str(n), "--index", str(i)]
        if run_root:
            cmd += ["--run-root", str(run_root)]
        log_path = log_dir / f"{spec.name}.w{i}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append((i, proc, log_path))
        print(f"  worker {i}: pid {proc.pid}, log {log_path}")
    seen: set[int] = set()
    worst = 0
    try:
        while procs:
            time.sleep(2.0)
            _print_new_trials(study, seen)
            for item in list(procs):
                i, proc, log_path = item
                code = proc.poll()
                if code is None:
                    continue
                procs.remove(item)
                if code < 0:
                    print(
                        f"  worker {i} was killed by signal {-code}; a trial it was running is "
                        f"failed after {spec.storage.grace_period} s without heartbeat and "
                        "retried by the other workers (or by the next run)",
                        file=sys.stderr,
                    )
                    worst = worst or 1
                elif code:
                    print(f"  worker {i} exited with code {code}:", file=sys.stderr)
                    print(_tail(log_path), file=sys.stderr)
                    worst = worst or code
    except KeyboardInterrupt:
        print("interrupted: stopping the workers (their trials are marked FAIL)", file=sys.stderr)
        _stop(p for _, p, _ in procs)
        return 130
    finally:
        _stop(p for _, p, _ in procs)
    _print_new_trials(study, seen)
    return worst


def _stop(procs) -> None:
    """SIGINT (Optuna marks the trial FAIL), then SIGKILL whatever is left after 30 s."""
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _print_new_trials(study: optuna.Study, seen: set[int]) -> None:
    with contextlib.suppress(Exception):  # progress is a nicety; never fail the run over it
        for t in study.get_trials(deepcopy=False, states=FINISHED):
            if t.number not in seen:
                seen.add(t.number)
                print(f"  {describe_trial(t)}")


def describe_trial(t: FrozenTrial) -> str:
    values = "" if t.values is None else " values " + ", ".join(f"{v:.4g}" for v in t.values)
    params = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
    )
    reason = t.user_attrs.get("fail_reason") or ""
    reason = f" ({reason.splitlines()[0][:120]})" if t.state == TrialState.FAIL and reason else ""
    return f"trial {t.number} {t.state.name}{values} [{params}]{reason}"


def _summarise(study: optuna.Study, n: int, code: int) -> int:
    try:
        b = budget(study)
    except Exception as e:
        print(f"could not read the study back: {e}", file=sys.stderr)
        return code or EXIT_STORAGE
    print(
        f"study {study.study_name!r}: {b.finished}/{n} trials finished "
        f"({b.complete} complete), {b.running} running, {b.waiting} queued"
    )
    if b.finished >= n and b.running == 0 and b.waiting == 0:
        return 0  # complete, even if a worker died on the way (its trial was retried)
    print("the study is not complete: rerun the same command to resume it", file=sys.stderr)
    return code or 1
