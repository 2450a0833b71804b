"""Fault injection: a dead store, a killed child, a killed harness, NaN losses and OOM.

One tiny benchmark goes through every fault in turn (each child pays the TensorFlow import
and a compile, so the stages share runs). The `slow` variant trains 3 epochs and, through
EFFGAN_FAULT_INJECT, pauses after each epoch's checkpoint and before its metrics are logged:
the window where each stage strikes.

1. all four variants: `ok` finishes, `diverge` (learning rate 1e30) and `oom` (an injected
   ResourceExhaustedError) fail with their reasons; in `slow`'s first window the SQLite store
   becomes unusable (a directory where its journal must go: what a read-only folder does,
   even for root), so the run and then the harness stop with a clear StoreError;
2. store repaired, rerun: `ok` skipped, `slow` resumes (epoch 1 logged from disk), and its
   child is SIGKILLed in the epoch-2 window: recorded FAILED with the signal;
3. rerun as a real `python -m bench run` process, SIGKILLed (its whole process group) in the
   epoch-3 window: the orphaned child ends itself;
4. rerun: `ok` skipped, `slow` resumes into the same MLflow run and finishes, every epoch
   logged exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_store, spec_toml, sqlite_ok

mlflow = pytest.importorskip("mlflow")

from bench import tracker  # noqa: E402
from bench.runner import run_benchmark  # noqa: E402
from bench.spec import expand, load_spec  # noqa: E402
from bench.worker import FAULT_ENV, run_dir_for  # noqa: E402
from effgan.train import LOSS_NAMES  # noqa: E402

pytestmark = pytest.mark.slow

VARIANTS = [
    {"generator": "resnet", "n_blocks": 1, "label": "ok"},
    {"generator": "resnet", "n_blocks": 1, "label": "diverge", "learning_rate": 1e30},
    {"generator": "resnet", "n_blocks": 1, "label": "oom", "identity_weight": 4.0},
    {"generator": "mobile_resnet", "n_blocks": 1, "label": "slow", "epochs": 3},
]
FAULTS = "sleep=4@slow,oom@oom"
WAIT_S = 300


def _strike_when(paths: list[Path], action: Callable[[], None]) -> threading.Thread:
    """Run `action` (once) as soon as every path exists, from a background thread."""

    def watch() -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if all(p.exists() for p in paths):
                action()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _epoch_done(run_dir: Path, epoch: int) -> list[Path]:
    """The files that say `epoch` is on disk and checkpointed (its window has begun)."""
    return [
        run_dir / "epochs" / f"epoch-{epoch:04d}.json",
        run_dir / "checkpoints" / f"epoch-{epoch:04d}" / "ckpt.index",
    ]


def _kill_group_of(pid_file: Path) -> None:
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _wait_gone(pid: int, timeout: float = 30) -> None:
    """Wait until `pid` has exited (a zombie not yet reaped by init counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} outlived its harness")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("faults")
    spec = root / "faults.toml"
    spec.write_text(spec_toml("faults", VARIANTS))
    uri = make_store(root / "mlruns")
    out = root / "runs"
    runs = {r.label: r for r in expand(load_spec(spec))}
    slow_dir = run_dir_for(runs["slow"], out)
    journal = root / "mlruns" / "mlflow.db-journal"
    mp = pytest.MonkeyPatch()
    mp.setenv(FAULT_ENV, FAULTS)
    s = SimpleNamespace(root=root, spec=spec, uri=uri, out=out, runs=runs, slow_dir=slow_dir)
    try:
        # 1. everything; the store dies in slow's first window
        s.lines1 = []
        watcher = _strike_when(_epoch_done(slow_dir, 1), lambda: journal.mkdir())
        with pytest.raises(tracker.StoreError) as err:
            run_benchmark(spec, uri, out=out, report=False, echo=s.lines1.append)
        watcher.join(1)
        s.store_error = str(err.value)
        s.outcome1 = (slow_dir / "outcome.json").read_text()
        shutil.rmtree(journal)
        s.ok_after_fault = sqlite_ok(uri)
        client = mlflow.MlflowClient(uri)
        s.exp = client.get_experiment_by_name("effgan-bench/faults")
        s.after1 = {
            r.data.tags["effgan.label"]: r for r in client.search_runs([s.exp.experiment_id])
        }

        # 2. resume; SIGKILL the child in the epoch-2 window
        s.lines2 = []
        watcher = _strike_when(
            _epoch_done(slow_dir, 2), lambda: _kill_group_of(slow_dir / "worker.pid")
        )
        s.results2 = run_benchmark(
            spec, uri, out=out, only=["ok", "slow"], report=False, echo=s.lines2.append
        )
        watcher.join(1)

        # 3. resume in a real harness process; SIGKILL its process group in the epoch-3 window
        log = (root / "harness3.log").open("w")
        harness = subprocess.Popen(
            [sys.executable, "-m", "bench", "run", "--spec", str(spec), "--tracking-uri", uri,
             "--out", str(out), "--only", "slow", "--no-report"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        killed = threading.Event()

        def kill_harness() -> None:
            os.killpg(harness.pid, signal.SIGKILL)
            killed.set()

        watcher = _strike_when(_epoch_done(slow_dir, 3), kill_harness)
        harness.wait(WAIT_S)
        log.close()
        s.harness3_killed = killed.is_set()
        s.harness3_log = (root / "harness3.log").read_text()
        _wait_gone(int((slow_dir / "worker.pid").read_text()))

        # 4. resume to the end
        s.lines4 = []
        s.results4 = run_benchmark(
            spec, uri, out=out, only=["ok", "slow"], report=False, echo=s.lines4.append
        )
        s.client = client
        s.final = {
            r.data.tags["effgan.label"]: r for r in client.search_runs([s.exp.experiment_id])
        }
        s.all_runs = client.search_runs([s.exp.experiment_id])
    finally:
        mp.undo()
    return s


def test_divergence_fails_with_epoch_and_loss(chain) -> None:
    run = chain.after1["diverge"]
    tags = run.data.tags
    assert run.info.status == "FAILED" and tags["effgan.failure_kind"] == "diverged", chain.lines1
    assert "diverged" in tags["effgan.failure"] and "epoch 1" in tags["effgan.failure"]
    assert any(name in tags["effgan.failure"] for name in LOSS_NAMES)
    assert chain.after1["ok"].info.status == "FINISHED"  # the benchmark went on


def test_oom_fails_with_a_hint(chain) -> None:
    run = chain.after1["oom"]
    assert run.info.status == "FAILED" and run.data.tags["effgan.failure_kind"] == "oom"
    assert "out of memory: lower batch_size or image_size" in run.data.tags["effgan.failure"]
    assert "mixed_bfloat16" in run.data.tags["effgan.failure"]


def test_storage_fault_fails_clearly_and_store_survives(chain) -> None:
    assert "MLflow store" in chain.store_error and "disk I/O error" in chain.store_error
    assert '"kind": "storage"' in chain.outcome1
    assert chain.ok_after_fault and sqlite_ok(chain.uri)
    assert chain.after1["slow"].info.status == "RUNNING"  # nothing could be recorded


def test_killed_child_is_recorded(chain) -> None:
    (result,) = chain.results2  # `ok` was skipped
    assert result.run.label == "slow" and result.status == "FAILED", chain.lines2
    assert result.kind == "crash" and "SIGKILL" in result.failure


def test_killed_harness_takes_its_child_along(chain) -> None:
    assert chain.harness3_killed, chain.harness3_log


def test_resumes_into_the_same_run_without_gaps(chain) -> None:
    (result,) = chain.results4
    assert result.status == "FINISHED", chain.lines4
    slow = chain.final["slow"]
    assert slow.info.run_id == chain.after1["slow"].info.run_id == result.run_id
    assert slow.info.status == "FINISHED" and int(slow.data.tags["effgan.attempts"]) == 4
    for name in ("cycle_loss_total", "epoch_time", "disc_a_loss"):
        steps = [m.step for m in chain.client.get_metric_history(slow.info.run_id, name)]
        assert sorted(steps) == [1, 2, 3], (name, steps)
    samples = {a.path for a in chain.client.list_artifacts(slow.info.run_id, "samples")}
    assert samples == {f"samples/epoch-000{e}.png" for e in (1, 2, 3)}
    assert {"config.json", "epoch_times.csv"} <= {
        a.path for a in chain.client.list_artifacts(slow.info.run_id)
    }


def test_finished_runs_are_never_retrained(chain) -> None:
    labels = [r.data.tags["effgan.label"] for r in chain.all_runs]
    assert sorted(labels) == ["diverge", "ok", "oom", "slow"]  # one MLflow run each
    assert chain.final["ok"].info.run_id == chain.after1["ok"].info.run_id
    assert sqlite_ok(chain.uri)
