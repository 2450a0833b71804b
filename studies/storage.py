"""Where a study lives: SQLite by default, PostgreSQL to scale out, a journal file if asked.

Why SQLite (with WAL and heartbeats) is the default rather than a journal file: both need no
server, and the journal is faster per storage call, but a trial here trains a GAN for minutes,
so milliseconds of storage time do not matter; what matters is that a worker killed mid-trial
does not leave a trial RUNNING forever. Only the RDB storages (SQLite, PostgreSQL) have
Optuna's heartbeat, which fails such a trial and, with `RetryHeartbeatStaleTrialCallback`,
queues it again. The numbers behind this are in studies/README.md.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from studies.spec import STUDIES_DIR, StorageSettings

DEFAULT_STORAGE = f"sqlite:///{STUDIES_DIR / 'optuna.db'}"
JOURNAL_PREFIX = "journal:"
StaleHook = Callable[[optuna.Study, FrozenTrial], None]


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Heartbeats and retries are "experimental" in Optuna since 2.8; we rely on them knowingly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and, via the storage's callback, requeue) trials whose heartbeat stopped."""
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)


class StorageError(RuntimeError):
    """The Optuna storage cannot be reached or written; the message says what to check."""


def normalize_url(url: str | None) -> str:
    """Fill in the default, make SQLite paths absolute, pick psycopg 3 for PostgreSQL."""
    url = (url or DEFAULT_STORAGE).strip()
    if url.startswith(("postgres://", "postgresql://")):
        # SQLAlchemy's default PostgreSQL driver is psycopg2, which the project does not ship.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///")).expanduser().resolve()
        url = f"sqlite:///{path}"
    elif "://" not in url and not url.startswith(JOURNAL_PREFIX):
        raise StorageError(
            f"storage {url!r} is not a URL; use sqlite:///PATH, "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or journal:PATH"
        )
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def kind(url: str) -> str:
    """sqlite | postgresql | mysql | journal | other."""
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    return scheme if scheme in ("sqlite", "postgresql", "mysql") else "other"


class StaleTrialHandler:
    """Heartbeat-stale trial: queue a retry (up to `max_retry`), then tell the hook (MLflow)."""

    def __init__(self, max_retry: int, hook: StaleHook | None = None):
        with quiet_experimental():
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self._hook = hook

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._retry(study, trial)
        if self._hook is not None:
            try:
                self._hook(study, trial)
            except Exception as e:  # bookkeeping must never stop the retry or the worker
                optuna.logging.get_logger("studies").warning(
                    f"could not mark trial {trial.number}'s MLflow run failed: {e}"
                )


def open_storage(
    url: str | None,
    settings: StorageSettings | None = None,
    on_stale: StaleHook | None = None,
    heartbeat: bool = True,
) -> optuna.storages.BaseStorage:
    """Open (and on first use create) the storage, failing with a clear StorageError.

    `heartbeat=False` is for readers (the report, the parent's progress polling): they never
    run trials, so they need no heartbeat thread.
    """
    url = normalize_url(url)
    settings = settings or StorageSettings()
    if kind(url) == "journal":
        return _open_journal(url)
    engine_kwargs: dict[str, Any] = {}
    if kind(url) == "sqlite":
        _prepare_sqlite(url, settings.timeout)
        engine_kwargs["connect_args"] = {"timeout": settings.timeout}
    elif kind(url) == "postgresql":
        engine_kwargs["pool_pre_ping"] = True  # survive a server restart between trials
        engine_kwargs["connect_args"] = {"connect_timeout": max(1, int(min(settings.timeout, 10)))}
    hb: dict[str, Any] = {}
    if heartbeat:
        hb = {
            "heartbeat_interval": settings.heartbeat_interval,
            "grace_period": settings.grace_period,
            "heartbeat_stale_trial_callback": StaleTrialHandler(settings.max_retry, on_stale),
        }
    try:
        with quiet_experimental():
            return RDBStorage(url, engine_kwargs=engine_kwargs, **hb)
    except Exception as e:
        raise StorageError(describe_error(e, url)) from e


def _prepare_sqlite(url: str, timeout: float) -> None:
    """Create the folder and switch the file to WAL, so readers never block the writer."""
    path = Path(url.removeprefix("sqlite:///"))
    if str(path) == ":memory:":
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=timeout)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
        finally:
            con.close()
    except (OSError, sqlite3.Error) as e:
        raise StorageError(describe_error(e, url)) from e


def _open_journal(url: str) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url.removeprefix(JOURNAL_PREFIX)).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:
        raise StorageError(describe_error(e, url)) from e


def describe_error(err: BaseException, url: str) -> str:
    """One readable paragraph: which storage, what failed, what to check."""
    err = getattr(err, "orig", None) or err  # SQLAlchemy wraps the driver's own error
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    text = re.sub(r"^\([^)]*\)\s*", "", text) or type(err).__name__  # "(module.Class) ..."
    where = redact(url)
    k = kind(url)
    if isinstance(err, ImportError | ModuleNotFoundError) or "No module named" in text:
        hint = "the database driver is missing; pip install 'effgan-bench[postgres]'."
    elif "locked" in text or "busy" in text:
        hint = (
            "another process holds a lock on the database; the study can be resumed with "
            "the same command once it is released."
        )
    elif k == "postgresql":
        hint = (
            "is the PostgreSQL server running and reachable, and are the user, password and "
            "database in the URL right?"
        )
    elif k == "sqlite":
        hint = "is the folder writable and on a local disk (SQLite needs working file locks)?"
    else:
        hint = "check the URL."
    return f"Optuna storage {where} failed: {text.rstrip('.')}. Hint: {hint}"


def storage_cause(err: BaseException) -> BaseException | None:
    """The storage-layer error in `err`'s chain, or None if it did not come from the database.

    The chain matters: when a write fails inside Optuna's own bookkeeping (telling a trial's
    result), Optuna raises an AssertionError whose cause is the database error.
    """
    import sqlalchemy.exc as sa_exc

    storage_errors = (
        StorageError,
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sqlite3.Error,
        optuna.exceptions.StorageInternalError,
    )
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, storage_errors):
            # Prefer the driver's own message (e.g. "database is locked") over Optuna's wrapper.
            inner = current.__cause__ or current.__context__
            if isinstance(current, optuna.exceptions.StorageInternalError) and inner is not None:
                return storage_cause(inner) or current
            return current
        current = current.__cause__ or current.__context__
    return None


def is_storage_error(err: BaseException) -> bool:
    """An error from the storage layer (the database), not from training."""
    return storage_cause(err) is not None
