"""Optuna studies: specs, the local storage, worker processes, kills, storage faults, report.

Sizes: the one study that trains for real (through bench.worker.execute) is 2 trials of a
1-block ResNet at 32 px, 1 epoch of 2 steps. The tests that start several worker processes
swap the trainer for `fake_execute` below (via $EFFGAN_STUDY_EXECUTE): they test the study's
bookkeeping (shared budget, heartbeats, retries, MLflow runs), and real training in each of
several processes would not fit the suite's CPU budget.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKE = "test_studies:fake_execute"


# ----------------------------------------------------------------------------- helpers


def fake_execute(run, tracking_uri, experiment, run_id=None, extra_tags=None,
                 epoch_callback=None, run_dir=None):  # fmt: skip
    """Stand-in for bench.worker.execute: logs like a run, sleeps instead of training.

    $EFFGAN_FAKE_TRIAL_S sets the seconds per epoch; with $EFFGAN_FAKE_BARRIER (a folder)
    each call waits until two processes have entered it, so both workers really overlap.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from bench.worker import RunOutcome

    client = MlflowClient(tracking_uri)
    barrier = os.environ.get("EFFGAN_FAKE_BARRIER")
    if barrier:
        Path(barrier, str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(Path(barrier).iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    seconds = float(os.environ.get("EFFGAN_FAKE_TRIAL_S", "0.2"))
    n_blocks = run.config.generator_options.get("n_blocks", 1)
    mae = 100.0 / (1 + n_blocks) + run.config.learning_rate * 1e4
    wall = seconds + 0.01 * n_blocks
    for epoch in range(1, run.config.epochs + 1):
        time.sleep(seconds)
        value = mae + (run.config.epochs - epoch)
        client.log_batch(run_id, metrics=[Metric("gt_mae_in", value, 0, epoch)])
        if epoch_callback is not None:
            epoch_callback(SimpleNamespace(epoch=epoch, wall_time=wall), {"gt_mae_in": value})
    final = {"gt_mae_in": mae, "gt_mae": mae, "epoch_time_mean": wall}
    client.log_batch(run_id, metrics=[Metric(k, v, 0, run.config.epochs) for k, v in final.items()])
    client.set_terminated(run_id, "FINISHED")
    return RunOutcome(run_id, "FINISHED", epochs_done=run.config.epochs, metrics=final)


def write_spec(
    path: Path,
    name: str = "tiny",
    n_trials: int = 2,
    params: str = '"resnet.n_blocks" = { low = 1, high = 2 }\n'
    "learning_rate = { low = 1e-4, high = 4e-4, log = true }",
    objectives: tuple[str, ...] = ("gt_mae_in", "epoch_time_mean"),
    pruner: str = 'name = "none"',
    heartbeat: tuple[int, int] = (1, 4),
    timeout: float = 30.0,
    epochs: int = 1,
) -> Path:
    """A study spec at test size (32 px, 2 steps, tiny cans) written to `path`."""
    objs = "".join(
        f'[[objectives]]\nmetric = "{m}"\ndirection = "minimize"\n\n' for m in objectives
    )
    path.write_text(
        f"""
[study]
name = "{name}"
n_trials = {n_trials}

[search]
generators = ["resnet"]

[search.params]
{params}

[data]
source = "cans"
image_size = 32
n_train_a = 4
n_train_b = 4
n_test = 4

[train]
epochs = {epochs}
steps_per_epoch = 2

{objs}
[sampler]
name = "tpe"
seed = 0

[pruner]
{pruner}

[storage]
heartbeat_interval = {heartbeat[0]}
grace_period = {heartbeat[1]}
max_retry = 2
timeout = {timeout}
"""
    )
    return path


def load(storage: str, name: str):
    """The study read back through a plain storage (no heartbeat)."""
    import optuna

    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(storage))


def mlflow_runs(tracking_uri: str, study: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(f"effgan-study/{study}")
    assert exp is not None, f"no MLflow experiment for study {study}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def study_cmd(spec: Path, storage: str, tracking: str, tmp: Path, n: int, workers: int) -> list:
    return [
        sys.executable, "-m", "studies", "run", "--spec", str(spec), "--storage", storage,
        "--tracking-uri", tracking, "--run-root", str(tmp / "runs"), "--log-dir", str(tmp),
        "--n-trials", str(n), "--workers", str(workers),
    ]  # fmt: skip


def fake_env(tmp: Path, seconds: float) -> dict[str, str]:
    barrier = tmp / "barrier"
    barrier.mkdir(exist_ok=True)
    path = os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "EFFGAN_STUDY_EXECUTE": FAKE,
        "EFFGAN_FAKE_TRIAL_S": str(seconds),
        "EFFGAN_FAKE_BARRIER": str(barrier),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def worker_logs(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp.glob("*.log")))


def two_workers(storage: str, tracking: str, tmp: Path, n: int, kill: bool) -> None:
    """The shared multi-process test: W=2 workers, N trials, optionally SIGKILL one."""
    from optuna.trial import TrialState

    spec = write_spec(tmp / "multi.toml", name="multi", n_trials=n)
    env = fake_env(tmp, seconds=4.0 if kill else 1.0)
    proc = subprocess.Popen(
        study_cmd(spec, storage, tracking, tmp, n, 2), env=env, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    killed_number = None
    try:
        if kill:
            deadline = time.monotonic() + 120
            while killed_number is None and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    trials = load(storage, "multi").get_trials(states=(TrialState.RUNNING,))
                except Exception:  # the study may not exist yet
                    continue
                for t in trials:
                    if "mlflow_run_id" in t.user_attrs and "worker" in t.user_attrs:
                        os.kill(int(t.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                        killed_number = t.number
                        break
            assert killed_number is not None, "no trial started within 120 s"
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"{out}\n{worker_logs(tmp)}"

    trials = load(storage, "multi").get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    real = [t for t in trials if not t.user_attrs.get("effgan.surplus")]
    complete = [t for t in real if t.state == TrialState.COMPLETE]
    assert len(complete) == n, [(t.number, t.state.name) for t in trials]
    assert not [t for t in real if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["worker"] for t in complete}) >= 1

    runs = mlflow_runs(tracking, "multi")
    by_trial = {r.data.tags["effgan.trial"]: r for r in runs}
    for t in complete:
        run = by_trial[str(t.number)]
        assert run.info.status == "FINISHED"
        assert run.data.tags["effgan.study"] == "multi"
        assert run.data.tags["effgan.trial_state"] == "COMPLETE"
        assert run.data.metrics["objective.gt_mae_in"] == pytest.approx(t.values[0])
    if kill:
        dead = next(t for t in trials if t.number == killed_number)
        assert dead.state == TrialState.FAIL
        retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed_number]
        assert len(retry) == 1, "the killed trial was not retried"
        assert retry[0].params == dead.params
        run = by_trial[str(killed_number)]
        assert run.info.status == "FAILED"
        assert run.data.tags["effgan.trial_state"] == "FAIL"
        assert by_trial[str(retry[0].number)].data.tags["effgan.retry_of"] == str(killed_number)
    else:  # both processes trained (the barrier makes them overlap), nothing failed
        assert len({t.user_attrs["worker"] for t in complete}) == 2
        assert len(real) == n


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def parse():
    from studies.spec import SpecError, parse_spec

    base = {
        "study": {"name": "x", "n_trials": 2},
        "search": {"generators": ["resnet"], "params": {}},
        "data": {"image_size": 32},
        "objectives": [{"metric": "gt_mae_in", "direction": "minimize"}],
    }

    def check(message: str, **changes):
        raw = {**base, **changes}
        with pytest.raises(SpecError, match=message):
            parse_spec(raw)

    check.base = base
    check.parse = parse_spec
    return check


def test_spec_bad_input_is_refused(parse) -> None:
    search = {"generators": ["resnet"]}
    parse(
        "unknown parameter path 'resnet.n_blockz'",
        search={**search, "params": {"resnet.n_blockz": {"low": 1, "high": 3}}},
    )
    parse(
        "'nosuch' is not a generator",
        search={**search, "params": {"nosuch.n_blocks": {"low": 1, "high": 3}}},
    )
    parse(
        "unknown parameter path 'dropout'",
        search={**search, "params": {"dropout": {"low": 0.1, "high": 0.3}}},
    )
    parse(
        "empty range, low 5 > high 2",
        search={**search, "params": {"resnet.n_blocks": {"low": 5, "high": 2}}},
    )
    parse("empty choices", search={**search, "params": {"upsampling": {"choices": []}}})
    parse("unknown generator 'resnot'", search={"generators": ["resnot"]})
    parse("unknown metric 'gt_mea_in'", objectives=[{"metric": "gt_mea_in"}])
    two = [{"metric": "gt_mae_in"}, {"metric": "epoch_time_mean"}]
    parse("Optuna does not support pruning multi-objective", objectives=two,
          pruner={"name": "median"})  # fmt: skip
    parse(
        "part of the trial budget", search={**search, "params": {"epochs": {"low": 1, "high": 3}}}
    )
    parse("unknown key 'epoch'", train={"epoch": 3})
    # Conditional parameters: each generator's own options, shared ones for both.
    spec = parse.parse(
        {
            **parse.base,
            "search": {
                "generators": ["resnet", "mobile_resnet"],
                "params": {
                    "resnet.n_blocks": {"low": 1, "high": 2},
                    "mobile_resnet.n_blocks": {"low": 3, "high": 4},
                    "upsampling": {"choices": ["transpose", "resize_conv"]},
                },
            },
        }
    )
    assert [p.path for p in spec.params_for("resnet")] == ["resnet.n_blocks", "upsampling"]
    values = {"generator": "mobile_resnet", "mobile_resnet.n_blocks": 3, "upsampling": "transpose"}
    assert spec.split(values) == ("mobile_resnet", {"n_blocks": 3, "upsampling": "transpose"}, {})


def test_cli_refuses_bad_input_before_any_training(tmp_path, capsys) -> None:
    from studies.__main__ import main

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bad = write_spec(tmp_path / "bad.toml", params='"resnet.n_blocks" = { low = 4, high = 2 }')
    assert main(["run", "--spec", str(bad), "--storage", storage, "--tracking-uri", tracking]) == 2
    assert "empty range" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()

    good = write_spec(tmp_path / "good.toml")
    unreachable = "postgresql://effgan:s3cret@127.0.0.1:9/optuna"  # port 9: nothing listens
    code = main(["run", "--spec", str(good), "--storage", unreachable, "--tracking-uri", tracking])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Optuna storage postgresql+psycopg://effgan:***@127.0.0.1:9/optuna failed" in err
    assert "s3cret" not in err
    assert not (tmp_path / "mlflow.db").exists()  # nothing was set up, nothing trained
    assert (
        main(["run", "--spec", str(good), "--storage", "nonsense", "--tracking-uri", tracking]) == 3
    )
    assert "is not a URL" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one machine


@pytest.mark.slow
def test_tiny_study_trains_logs_to_mlflow_and_reports(tmp_path) -> None:
    """The real path: 2 trials through bench.worker.execute, MLflow runs, the report."""
    from optuna.trial import TrialState

    from studies.__main__ import main

    spec = write_spec(tmp_path / "tiny.toml")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--spec", str(spec), "--storage", storage]
    run = ["run", *args, "--tracking-uri", tracking, "--run-root", str(tmp_path / "runs")]
    assert main(run) == 0

    trials = load(storage, "tiny").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    runs = {r.data.tags["effgan.trial"]: r for r in mlflow_runs(tracking, "tiny")}
    assert sorted(runs) == ["0", "1"]
    for t in trials:
        r = runs[str(t.number)]
        assert r.info.status == "FINISHED"
        assert r.data.tags["effgan.study"] == "tiny"
        assert r.data.tags["effgan.trial_state"] == "COMPLETE"
        assert r.data.params["trial.resnet.n_blocks"] == str(t.params["resnet.n_blocks"])
        assert r.data.params["gen.n_blocks"] == str(t.params["resnet.n_blocks"])  # the harness's
        assert r.data.metrics["objective.gt_mae_in"] == pytest.approx(t.values[0])
        assert r.data.metrics["objective.epoch_time_mean"] == pytest.approx(t.values[1])
        assert r.data.metrics["gt_mae_in"] == pytest.approx(t.values[0])  # logged by the harness
        assert "cycle_loss_total" in r.data.metrics

    # Resuming a finished study trains nothing more.
    assert main(run) == 0
    assert len(load(storage, "tiny").get_trials()) == 2

    assert main(["report", *args, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "tiny.md").read_text()
    assert "Pareto front" in text and "| trial | generator | blocks |" in text
    for png in ("pareto", "blocks"):
        assert (tmp_path / "tiny_plots" / f"{png}.png").stat().st_size > 1000


def test_pruning_single_objective(tmp_path) -> None:
    """Median pruner on a single objective: intermediate values reported, trials pruned."""
    from optuna.trial import TrialState

    from studies.run import run_study
    from studies.spec import load_spec

    spec = load_spec(
        write_spec(
            tmp_path / "prune.toml",
            name="prune",
            n_trials=5,
            objectives=("gt_mae_in",),
            pruner='name = "median"\nn_startup_trials = 1',
            params='"resnet.n_blocks" = { low = 1, high = 9 }',
            epochs=3,
        )
    )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_study(spec, storage, tracking, execute=fake_execute, run_root=tmp_path) == 0
    trials = load(storage, "prune").get_trials()
    assert len(trials) == 5
    assert all(t.intermediate_values for t in trials)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state.name) for t in trials]
    runs = {r.data.tags["effgan.trial"]: r for r in mlflow_runs(tracking, "prune")}
    for t in pruned:
        assert runs[str(t.number)].data.tags["effgan.trial_state"] == "PRUNED"
        assert runs[str(t.number)].info.status == "KILLED"


def test_storage_fault_fails_clearly_and_the_study_resumes(tmp_path, capsys) -> None:
    """The Optuna database gets locked mid-trial: the worker stops with a clear message;
    rerunning the same command finishes the study, retrying the cut-off trial."""
    from optuna.trial import TrialState

    from studies.run import run_study
    from studies.spec import load_spec

    spec = load_spec(write_spec(tmp_path / "fault.toml", name="fault", n_trials=3, timeout=1.0))
    db = tmp_path / "optuna.db"
    storage, tracking = f"sqlite:///{db}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    lock: list[sqlite3.Connection] = []

    def locking_execute(run, *args, **kwargs):
        outcome = fake_execute(run, *args, **kwargs)
        # The second trial: another process grabs the database and holds it.
        if not lock and len(load(storage, "fault").get_trials()) == 2:
            con = sqlite3.connect(db, timeout=10, isolation_level=None)
            con.execute("BEGIN EXCLUSIVE")
            lock.append(con)
        return outcome

    assert run_study(spec, storage, tracking, execute=locking_execute, run_root=tmp_path) == 3
    err = capsys.readouterr().err
    assert "database is locked" in err and "rerun the same command to resume" in err
    lock[0].execute("ROLLBACK")
    lock[0].close()

    assert run_study(spec, storage, tracking, execute=fake_execute, run_root=tmp_path) == 0
    trials = load(storage, "fault").get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3, states
    cut = trials[1]
    assert cut.state == TrialState.FAIL
    assert any(t.system_attrs.get("failed_trial") == 1 for t in trials)


# ----------------------------------------------------------------------------- several workers


def test_two_workers_share_one_budget(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    two_workers(storage, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, n=4, kill=False)


def test_killed_worker_trial_is_retried(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    two_workers(storage, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, n=3, kill=True)
