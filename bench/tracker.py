"""The MLflow side of the harness: the store, the experiment, and reading and writing runs.

Why one module: the schema (tag, param and metric names) lives here and in the worker only,
and every store failure becomes a `StoreError` that says which store and what went wrong, so
a locked or unwritable store fails a run clearly instead of as a deep SQL traceback.

Schema (the report reads it): one experiment `effgan-bench/<spec>`; one run per expanded
config, named `<generator>-<key>`, tagged `effgan.key`, `.spec`, `.generator`, `.family`,
`.thesis_method`, `.label`, `.status`, `.device_kind`, `.precision`, `.seed`; metrics per
epoch with `step=epoch`, logged in one batch per epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = REPO_ROOT / "mlruns" / "mlflow.db"
EXPERIMENT_PREFIX = "effgan-bench/"
TERMINAL = ("FINISHED", "FAILED", "KILLED")


class StoreError(RuntimeError):
    """The tracking store cannot be reached or written; the message names it."""


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else the SQLite store under the repo's mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def experiment_name(spec: str) -> str:
    return f"{EXPERIMENT_PREFIX}{spec}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser()


def artifact_root(uri: str, experiment: str = "") -> str | None:
    """Artifacts beside a SQLite database (`<db dir>/artifacts/<experiment>`); a server
    picks its own."""
    db = sqlite_path(uri)
    if db is None:
        return None
    parts = [
        re.sub(r"[^A-Za-z0-9_.-]", "_", p)
        for p in experiment.split("/")
        if p not in ("", ".", "..")
    ]
    return db.resolve().parent.joinpath("artifacts", *parts).as_uri()


@contextlib.contextmanager
def store_errors(uri: str, doing: str) -> Iterator[None]:
    """Turn any failure of the store into a StoreError naming the store and the action."""
    try:
        yield
    except StoreError:
        raise
    except Exception as err:  # MlflowException, sqlite3/SQLAlchemy errors, OSError, HTTP ...
        text = " ".join(str(err).split("[SQL:")[0].split())[:600]  # not the whole statement
        raise StoreError(
            f"MLflow store {uri} failed while {doing}: {type(err).__name__}: {text}"
        ) from err


def open_store(uri: str, timeout_s: float = 5.0):
    """A client for `uri`, after checking the store is reachable and its schema exists.

    Run once in the parent before any child starts: a fresh SQLite or PostgreSQL store is
    created (migrated) here, because several processes migrating at once break it. An
    unreachable server or an unusable path fails within `timeout_s`, before any training.
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        if db.resolve() == DEFAULT_DB.resolve():
            db.parent.mkdir(parents=True, exist_ok=True)
        folder = db.resolve().parent
        if not folder.is_dir():
            raise StoreError(f"MLflow store {uri}: folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise StoreError(f"MLflow store {uri}: {db} is not writable")
    elif uri.startswith(("http://", "https://")):
        url = urlparse(uri)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=timeout_s).close()
        except OSError as err:
            raise StoreError(
                f"MLflow tracking server {uri} cannot be reached ({err}); start it, or pass "
                "--tracking-uri sqlite:///path/mlflow.db"
            ) from None
    env = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with store_errors(uri, "opening it"):
            client = MlflowClient(tracking_uri=uri)
            try:
                client.search_experiments(max_results=1)
            except Exception as err:
                if db is None or "out-of-date database schema" not in str(err):
                    raise
                upgrade_sqlite(db, uri)
                client = MlflowClient(tracking_uri=uri)
                client.search_experiments(max_results=1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return client


def upgrade_sqlite(db: Path, uri: str) -> None:
    """Migrate a SQLite store made by an older MLflow, keeping a copy of it beside it.

    Only local SQLite files: a shared server's database is its operator's to migrate.
    """
    import shutil

    from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine_with_retry

    backup = db.with_name(f"{db.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(db, backup)
    print(f"upgrading the MLflow schema of {db} (a copy of the old one: {backup})")
    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        _upgrade_db(engine)
    finally:
        engine.dispose()


def ensure_experiment(client, name: str, uri: str) -> str:
    """The id of experiment `name`, created (artifacts beside a SQLite db) or restored."""
    with store_errors(uri, f"creating experiment {name}"):
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return client.create_experiment(name, artifact_location=artifact_root(uri, name))
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id


def find_runs(client, experiment_id: str, key: str, uri: str) -> list:
    """Runs of `experiment_id` tagged `effgan.key = key`, newest first."""
    with store_errors(uri, f"searching runs of key {key}"):
        return client.search_runs(
            [experiment_id],
            filter_string=f"tags.`effgan.key` = '{key}'",
            order_by=["attributes.start_time DESC"],
            max_results=100,
        )


def all_runs(client, experiment_id: str, uri: str) -> list:
    with store_errors(uri, "listing runs"):
        return client.search_runs([experiment_id], max_results=50000)


def run_tags(run, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The tags every run carries from its creation (the worker adds status and device)."""
    from effgan.registry import generator_entry

    entry = generator_entry(run.config.generator)
    tags = {
        "effgan.key": run.key,
        "effgan.spec": run.spec,
        "effgan.generator": run.config.generator,
        "effgan.family": entry.family,
        "effgan.thesis_method": entry.thesis_method or "none",
        "effgan.label": run.label,
        "effgan.variant": run.variant,
        "effgan.precision": run.config.precision,
        "effgan.seed": str(run.config.seed),
    }
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def create_run(client, experiment_id: str, run, uri: str, extra_tags: dict | None = None) -> str:
    """A new RUNNING run for RunSpec `run`; its id."""
    with store_errors(uri, f"creating the run for {run.name}"):
        created = client.create_run(
            experiment_id,
            run_name=run.name,
            tags={**run_tags(run, extra_tags), "effgan.status": "QUEUED"},
        )
        return created.info.run_id


def record_outcome(
    client, run_id: str, uri: str, status: str, kind: str = "", failure: str = ""
) -> None:
    """Mark a run FINISHED/FAILED/KILLED with its reason (tags and the run's own status)."""
    tags = {"effgan.status": status}
    if status != "FINISHED":
        tags["effgan.failure"] = failure[:5000] or status.lower()
        tags["effgan.failure_kind"] = kind or "error"
    with store_errors(uri, f"recording {status} on run {run_id}"):
        RunLogger(client, run_id, uri, read=False).set_tags(tags)
        client.set_terminated(run_id, status=status)


class RunLogger:
    """Writes one run: batched metrics that never repeat an epoch, params that are set once."""

    def __init__(self, client, run_id: str, uri: str, read: bool = True):
        self.client, self.run_id, self.uri = client, run_id, uri
        self.params: dict[str, str] = {}
        self.metrics: set[str] = set()
        self.tags: dict[str, str] = {}
        self.logged_epochs: set[int] = set()
        if read:
            with store_errors(uri, f"reading run {run_id}"):
                data = client.get_run(run_id).data
                self.params, self.metrics, self.tags = (
                    dict(data.params),
                    set(data.metrics),
                    dict(data.tags),
                )
                if "cycle_loss_total" in self.metrics:  # logged in the same batch as every epoch
                    history = client.get_metric_history(run_id, "cycle_loss_total")
                    self.logged_epochs = {m.step for m in history}

    def log_params(self, params: dict[str, Any]) -> None:
        """Params not logged yet (MLflow params are immutable: a resumed run keeps the first)."""
        from mlflow.entities import Param

        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in self.params]
        with store_errors(self.uri, f"logging params of run {self.run_id}"):
            for i in range(0, len(new), 100):
                self.client.log_batch(self.run_id, params=new[i : i + 100])
        self.params.update({p.key: p.value for p in new})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """One batch call; non-finite values are left out (they would only break plots)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), ts, int(step))
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        with store_errors(self.uri, f"logging metrics of run {self.run_id} at step {step}"):
            for i in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])
        self.metrics.update(m.key for m in batch)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        with store_errors(self.uri, f"tagging run {self.run_id}"):
            self.client.log_batch(self.run_id, tags=batch)
        self.tags.update({t.key: t.value for t in batch})

    def set_running(self) -> None:
        with store_errors(self.uri, f"marking run {self.run_id} RUNNING"):
            self.client.update_run(self.run_id, status="RUNNING")

    def log_artifacts(self, folder: Path) -> None:
        """Mirror a staged folder into the run's artifacts."""
        with store_errors(self.uri, f"storing artifacts of run {self.run_id}"):
            self.client.log_artifacts(self.run_id, str(folder))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        with store_errors(self.uri, f"storing artifact {Path(path).name} of run {self.run_id}"):
            self.client.log_artifact(self.run_id, str(path), artifact_path)
