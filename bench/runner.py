"""The benchmark loop: decide what still needs training, train each run in a child, record.

Why children: TensorFlow only gives memory back when its process ends, and one crash, OOM,
NaN or hang must cost one run, not the benchmark. The parent never trains; it creates the
store and the experiment once (concurrent migrations break a fresh store), starts each run
as `python -m bench.worker JOB.json` in its own process group, enforces the run's timeout by
killing that group, and records how the child ended (from its outcome file, else from its
exit status and the tail of its log).

What a rerun does with each run of the spec (matched by the `effgan.key` tag):
- FINISHED: skipped; `--force` starts a new MLflow run (the old one stays in the store).
- RUNNING, KILLED or FAILED (a killed harness, a timeout, a crash, OOM, divergence, a store
  fault): resumed INTO THE SAME MLflow run from the newest checkpoint of its run folder
  (`<out>/<spec>/<key>/`), with no gap and no duplicate in its per-epoch metrics. A diverged
  run is retried too: it restarts from its last good checkpoint, and on a GPU the same seed
  need not diverge again. If the run folder is gone but the run already logged epochs, a new
  MLflow run starts from scratch instead (one run never mixes two trainings).
- FAILED because the generator rejected the config (`effgan.failure_kind = config`, e.g.
  `n_blocks = 0`): not retried, since nothing would change; `--force` retries it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import tracker
from bench.spec import RunSpec, confined, expand, load_spec, run_key, select
from bench.worker import DEFAULT_OUT, OOM_HINT, prepare_run_dir, run_dir_for

TERM_GRACE_S = 15.0  # after SIGTERM, how long a child may take to record its end
POLL_S = 0.2
LOG_TAIL_LINES = 20


@dataclass
class Planned:
    """What a (re)run will do with one expanded run."""

    run: RunSpec
    action: str  # "skip", "new" or "resume"
    run_id: str | None = None
    status: str = "new"  # the store's status of the existing run, if any
    note: str = ""


@dataclass
class Result:
    """How one run of this invocation ended."""

    run: RunSpec
    run_id: str | None
    status: str
    kind: str = ""
    failure: str = ""
    seconds: float = 0.0
    run_dir: str = ""


@dataclass
class _Active:
    plan: Planned
    proc: subprocess.Popen
    run_id: str
    run_dir: Path
    log_path: Path
    log_offset: int
    started: float
    gpu: str | None
    term_sent: float | None = None
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- planning
def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use, with a relative SQLite path made absolute for the children."""
    uri = uri or tracker.default_tracking_uri()
    db = tracker.sqlite_path(uri)
    return f"sqlite:///{db.resolve()}" if db is not None else uri


def plan(
    client, experiment_id: str, runs: list[RunSpec], uri: str, out: Path, force: bool
) -> list[Planned]:
    """Match each run to the store by key and decide: skip, resume (same run id) or new."""
    from effgan.train import latest_checkpoint

    plans = []
    for run in runs:
        found = tracker.find_runs(client, experiment_id, run.key, uri)
        if force or not found:
            plans.append(Planned(run, "new", note="forced" if found else ""))
            continue
        finished = [r for r in found if r.info.status == "FINISHED"]
        if finished:
            plans.append(Planned(run, "skip", finished[0].info.run_id, "FINISHED"))
            continue
        latest = found[0]
        rid, status = latest.info.run_id, latest.info.status
        if latest.data.tags.get("effgan.failure_kind") == "config":
            reason = latest.data.tags.get("effgan.failure", "")
            plans.append(
                Planned(run, "skip", rid, status, f"config rejected (--force retries): {reason}")
            )
            continue
        run_dir = run_dir_for(run, out)
        marker = run_dir / "mlflow_run_id"
        ours = marker.exists() and marker.read_text().strip() == rid
        if ours and latest_checkpoint(run_dir / "checkpoints") is not None:
            plans.append(Planned(run, "resume", rid, status, "from its last checkpoint"))
        elif "cycle_loss_total" not in latest.data.metrics:
            plans.append(Planned(run, "resume", rid, status, "from the start (no checkpoint)"))
        else:
            plans.append(Planned(run, "new", None, status, f"run folder of {rid} is gone"))
    return plans


def visible_gpus() -> list[str]:
    """GPU ids the children can be pinned to (`CUDA_VISIBLE_DEVICES`, else nvidia-smi)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


# ---------------------------------------------------------------------------- children
def launch(p: Planned, client, experiment_id: str, uri: str, out: Path, gpu: str | None) -> _Active:
    """Start the child for one planned run (creating its MLflow run first when new)."""
    run = p.run
    run_id = p.run_id or tracker.create_run(client, experiment_id, run, uri)
    run_dir = run_dir_for(run, out)
    prepare_run_dir(run_dir, run_id)  # a folder another MLflow run left is emptied
    outcome = run_dir / "outcome.json"
    outcome.unlink(missing_ok=True)
    job = {
        "run": run.to_dict(),
        "tracking_uri": uri,
        "experiment": tracker.experiment_name(run.spec),
        "run_id": run_id,
        "run_dir": str(run_dir),
        "outcome": str(outcome),
        "parent_pid": os.getpid(),
    }
    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=2, default=str))
    log_path = run_dir / "worker.log"
    with log_path.open("a") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {p.action} {run.name} ({run_id})\n")
        offset = log.tell()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", str(job_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    return _Active(p, proc, run_id, run_dir, log_path, offset, time.monotonic(), gpu)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def log_tail(path: Path, offset: int, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines this attempt wrote to the child's log."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    keep = [
        ln
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith(("I0000", "WARNING: All log"))
    ]
    return "\n".join(keep[-lines:])


def collect(a: _Active, client, uri: str) -> Result:
    """Read how a finished child ended and make sure the store says so."""
    rc = a.proc.returncode
    seconds = time.monotonic() - a.started
    outcome = {}
    with contextlib.suppress(OSError, ValueError):
        outcome = json.loads((a.run_dir / "outcome.json").read_text())
    tail = log_tail(a.log_path, a.log_offset)
    if a.timed_out:
        status, kind = "FAILED", "timeout"
        failure = f"timeout: killed after {seconds:.0f} s (timeout_s = {a.plan.run.timeout_s:g})"
    elif outcome:
        status, kind, failure = outcome["status"], outcome["kind"], outcome["failure"]
        if outcome.get("recorded", True):
            return Result(a.plan.run, a.run_id, status, kind, failure, seconds, str(a.run_dir))
    elif rc is not None and rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        status, kind = "FAILED", "crash"
        failure = f"worker killed by {name}"
        if -rc == signal.SIGKILL:
            failure += (
                " (not by the harness: by hand, or by the kernel's OOM killer: " + OOM_HINT + ")"
            )
    else:
        status, kind = "FAILED", "crash"
        failure = f"worker exited with code {rc} without an outcome"
    if tail and kind in ("crash", "timeout", "error"):
        failure += f"\n--- last lines of {a.log_path}:\n{tail}"
    tracker.record_outcome(client, a.run_id, uri, status, kind, failure)  # StoreError: stop
    return Result(a.plan.run, a.run_id, status, kind, failure, seconds, str(a.run_dir))


# ---------------------------------------------------------------------------- the loop
def run_benchmark(
    spec: str | Path,
    tracking_uri: str | None = None,
    only: list[str] | None = None,
    force: bool = False,
    parallel: int | None = None,
    out: Path | str | None = None,
    report: bool | Path = True,
    echo: Callable[[str], None] = print,
) -> list[Result]:
    """Run every not-yet-finished run of `spec`, then write its report; the results."""
    loaded = load_spec(spec)
    runs = select(expand(loaded), only)
    uri = resolve_uri(tracking_uri)
    out = Path(out).resolve() if out else DEFAULT_OUT
    client = tracker.open_store(uri)
    exp_id = tracker.ensure_experiment(client, tracker.experiment_name(loaded.name), uri)
    with harness_lock(out, loaded.name):
        plans = plan(client, exp_id, runs, uri, out, force)
        todo = [p for p in plans if p.action != "skip"]
        skipped = [p for p in plans if p.action == "skip"]
        echo(
            f"{loaded.name}: {len(runs)} runs: {len(todo)} to train "
            f"({sum(p.action == 'resume' for p in todo)} resumed), {len(skipped)} skipped; store {uri}"
        )
        for p in skipped:
            if p.note:
                echo(f"  skip {p.run.label} seed {p.run.config.seed} [{p.run.key}]: {p.note}")
        results = _pool(todo, client, exp_id, uri, out, parallel, echo) if todo else []
    failed = [r for r in results if r.status != "FINISHED"]
    echo(
        f"{loaded.name}: {len(results) - len(failed)} finished, {len(failed)} failed, {len(skipped)} skipped"
    )
    if report:
        path = report if isinstance(report, Path) else default_report_path(loaded.name)
        write_report(uri, loaded.name, path, echo)
    return results


class BusyError(RuntimeError):
    """Another harness is running the same spec into the same output folder."""


@contextlib.contextmanager
def harness_lock(out: Path, spec_name: str) -> Iterator[None]:
    """One harness per spec and output folder: two would train the same runs twice.

    An flock: the kernel releases it when the holder dies, even by SIGKILL.
    """
    import fcntl

    path = confined(out, spec_name, ".harness.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise BusyError(
                f"another `bench run` of spec {spec_name} is running into {out} "
                f"(pid {f.read().strip() or '?'}); wait for it or use another --out"
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield


def default_report_path(spec_name: str) -> Path:
    """REPORT.md at the repo root for the quick spec, report/<spec>/REPORT.md otherwise."""
    root = tracker.REPO_ROOT
    return root / "REPORT.md" if spec_name == "quick" else root / "report" / spec_name / "REPORT.md"


def write_report(uri: str, spec_name: str, path: Path, echo: Callable[[str], None] = print) -> None:
    try:
        from bench.report import write_report as render
    except ImportError as err:
        echo(f"report skipped: bench.report is not available ({err})")
        return
    echo(f"report: {render(uri, spec_name, path)}")


def _pool(todo, client, exp_id, uri, out, parallel, echo) -> list[Result]:
    """Run the children, `parallel` at a time, each pinned to its own GPU when there are any."""
    gpus = visible_gpus()
    n = max(1, parallel or len(gpus) or 1)
    slots: list[str | None] = [gpus[i % len(gpus)] for i in range(n)] if gpus else [None] * n
    if n > 1 and not gpus:
        echo(
            f"warning: {n} runs at once on the CPU share its cores: their times are not comparable"
        )
    pending, active = deque(todo), {}
    results: list[Result] = []
    total = len(todo)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or active:
            for slot in range(n):
                if slot not in active and pending:
                    p = pending.popleft()
                    active[slot] = a = launch(p, client, exp_id, uri, out, slots[slot])
                    where = f" on GPU {a.gpu}" if a.gpu is not None else ""
                    echo(f"[{total - len(pending)}/{total}] {p.action} {p.run.label} seed "
                         f"{p.run.config.seed} [{p.run.key}] run {a.run_id[:8]}{where}")  # fmt: skip
            for slot, a in list(active.items()):
                if a.proc.poll() is None:
                    _enforce_timeout(a)
                    continue
                del active[slot]
                r = collect(a, client, uri)
                results.append(r)
                echo(_result_line(r, len(results), total))
            if active:
                time.sleep(POLL_S)
    except (KeyboardInterrupt, tracker.StoreError) as err:
        _stop_all(active.values(), client, uri, err, echo)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return results


def _enforce_timeout(a: _Active) -> None:
    timeout = a.plan.run.timeout_s
    now = time.monotonic()
    if a.term_sent is None and timeout and now - a.started > timeout:
        a.timed_out, a.term_sent = True, now
        _signal_group(a.proc, signal.SIGTERM)
    elif a.term_sent is not None and now - a.term_sent > TERM_GRACE_S:
        _signal_group(a.proc, signal.SIGKILL)


def _stop_all(active, client, uri, err, echo) -> None:
    """The harness is stopping (interrupt, dead store): end the children, record what we can."""
    active = list(active)
    for a in active:
        _signal_group(a.proc, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    for a in active:
        with contextlib.suppress(subprocess.TimeoutExpired):
            a.proc.wait(max(0.1, deadline - time.monotonic()))
        if a.proc.poll() is None:
            _signal_group(a.proc, signal.SIGKILL)
            a.proc.wait()
        with contextlib.suppress(tracker.StoreError):
            tracker.record_outcome(
                client, a.run_id, uri, "KILLED", "interrupted", f"harness stopped: {err}"
            )
    if isinstance(err, tracker.StoreError):
        echo(f"stopping: {err}\nNothing finished is lost: fix the store and rerun to resume.")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _result_line(r: Result, i: int, total: int) -> str:
    head = f"[{i}/{total}] {r.run.label} seed {r.run.config.seed} [{r.run.key}]: {r.status}"
    if r.status == "FINISHED":
        return f"{head} in {r.seconds:.1f} s"
    return f"{head} ({r.kind}) after {r.seconds:.1f} s: {r.failure}"


# ---------------------------------------------------------------------------- listing
def list_runs(
    spec: str | Path, tracking_uri: str | None = None, out: Path | str | None = None
) -> list[Planned]:
    """The spec's expanded runs with their state in the store (no store: all "new")."""
    loaded = load_spec(spec)
    runs = expand(loaded)
    uri = resolve_uri(tracking_uri)
    db = tracker.sqlite_path(uri)
    if db is not None and not db.exists():  # listing never creates a store
        return [Planned(r, "new") for r in runs]
    try:
        client = tracker.open_store(uri)
        exp = client.get_experiment_by_name(tracker.experiment_name(loaded.name))
    except Exception:  # listing must work without a store
        exp = None
    if exp is None:
        return [Planned(r, "new") for r in runs]
    return plan(
        client, exp.experiment_id, runs, uri, Path(out).resolve() if out else DEFAULT_OUT, False
    )


# ---------------------------------------------------------------------------- overhead
def measure_overhead(
    spec: str | Path = "quick",
    generator: str = "resnet",
    epochs: int = 6,
    steps_per_epoch: int | None = None,
    tracking_uri: str | None = None,
    out: Path | str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, float]:
    """Harness cost per epoch: the same run bare (CycleGAN.fit in this process, no MLflow)
    and through the harness (child process, MLflow logging, samples), as a ratio.

    Per-epoch wall time here is callback to callback: the epoch itself plus everything done
    between epochs (epoch JSON, checkpoint, and in the harness: the metric batch, sample
    grids, artifacts). The first epoch of each (trace/compile, restore) is left out; the
    ratio is of the medians over the rest. The two runs are minutes apart, so on a shared
    machine their ratio carries the load's drift (several %); `in_run_ratio` measures the
    harness's own work inside each epoch of the harness run instead, which no drift
    affects. A temporary store is used unless one is given.
    """
    from effgan.train import CycleGAN

    loaded = load_spec(spec)
    candidates = [r for r in expand(loaded) if generator in (r.config.generator, r.label)]
    if not candidates:
        raise ValueError(f"spec {loaded.name} has no run of {generator!r}")
    base = candidates[0]
    config = replace(
        base.config, epochs=epochs, steps_per_epoch=steps_per_epoch or base.config.steps_per_epoch
    )
    run = replace(
        base,
        key=run_key(config, base.data),
        config=config,
        eval_epochs=[epochs],
        fid=False,
        spec=f"{loaded.name}-overhead",
        timeout_s=0,
    )
    with tempfile.TemporaryDirectory(prefix="effgan-overhead-") as tmp:
        tmp = Path(tmp)
        data = run.data.load(config.image_size)
        echo(
            f"overhead: bare trainer, {run.label}, {epochs} epochs x {config.steps_per_epoch} steps"
        )
        marks: list[float] = []
        gan = CycleGAN(config)
        t0 = time.perf_counter()
        bare = gan.fit(data, tmp / "bare", callbacks=[lambda r: marks.append(time.perf_counter())])
        bare_intervals = [b - a for a, b in zip([t0, *marks], marks, strict=False)]
        del gan
        echo("overhead: the same run through the harness (child process + MLflow)")
        uri = resolve_uri(tracking_uri or f"sqlite:///{tmp / 'mlflow.db'}")
        client = tracker.open_store(uri)
        exp_id = tracker.ensure_experiment(client, tracker.experiment_name(run.spec), uri)
        (result,) = _pool(
            [Planned(run, "new")], client, exp_id, uri, Path(out) if out else tmp / "runs", 1, echo
        )
        if result.status != "FINISHED":
            raise RuntimeError(f"the harness run failed: {result.failure}")
        timing = json.loads((Path(result.run_dir) / "timing.json").read_text())
        from effgan.train import read_epoch_results

        harness_epochs = read_epoch_results(result.run_dir)
    harness_intervals = [t["interval_s"] for t in timing]
    bare_med = statistics.median(bare_intervals[1:])
    harness_med = statistics.median(harness_intervals[1:])
    figures = {
        "epochs": float(epochs),
        "bare_epoch_wall_median_s": bare_med,
        "harness_epoch_wall_median_s": harness_med,
        "bare_epoch_time_median_s": statistics.median(r.wall_time for r in bare[1:]),
        "harness_epoch_time_median_s": statistics.median(r.wall_time for r in harness_epochs[1:]),
        "ratio": harness_med / bare_med,
        "overhead_pct": 100.0 * (harness_med / bare_med - 1.0),
        # the mean includes the sample grids and the final evaluation, which the median skips
        "ratio_mean": statistics.fmean(harness_intervals[1:])
        / statistics.fmean(bare_intervals[1:]),
        "harness_work_median_s": statistics.median(t["harness_s"] for t in timing[1:]),
        # within the harness run itself: each epoch's wall time over the same minus the
        # harness's own work in it; immune to the load drifting between the two runs
        "in_run_ratio": statistics.median(
            t["interval_s"] / (t["interval_s"] - t["harness_s"]) for t in timing[1:]
        ),
        "load_avg_1m": os.getloadavg()[0],
    }
    echo(
        f"overhead: per-epoch wall {harness_med:.3f} s through the harness vs {bare_med:.3f} s "
        f"bare: ratio {figures['ratio']:.4f} ({figures['overhead_pct']:+.2f}%); within the "
        f"harness run: {figures['in_run_ratio']:.4f} ({figures['harness_work_median_s'] * 1000:.0f} "
        f"ms of harness work per epoch, median); load average {figures['load_avg_1m']:.1f}"
    )
    return figures
