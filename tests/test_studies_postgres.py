"""The scale-out path, really exercised: Optuna on PostgreSQL, MLflow behind `mlflow server`.

PostgreSQL comes from $EFFGAN_TEST_POSTGRES_URL (CI: .ci/run starts a cluster and sets it),
else from a throwaway cluster started here (tests/pg.py). If neither works the test FAILS
and says why; only an explicit EFFGAN_SKIP_POSTGRES=1 turns that into a skip.
"""

from __future__ import annotations

import os
import uuid

import pg
import pytest
from test_studies import two_workers

pytestmark = [pytest.mark.postgres]
ENV_URL = "EFFGAN_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def postgres(request) -> str:
    """The URL of a database on a PostgreSQL server we may create databases on."""
    url = os.environ.get(ENV_URL)
    if url:
        return url
    try:
        base, url = pg.start()
    except pg.PostgresUnavailable as e:
        message = (
            f"PostgreSQL could not be started for the scale-out study test: {e}. "
            f"Set {ENV_URL}=postgresql+psycopg://USER@HOST:PORT/DB to use a running server, or "
            "EFFGAN_SKIP_POSTGRES=1 to skip this test on purpose."
        )
        if os.environ.get("EFFGAN_SKIP_POSTGRES") == "1":
            pytest.skip(message)
        pytest.fail(message)
    request.addfinalizer(lambda: pg.stop(base))
    return url


@pytest.fixture
def databases(postgres, request) -> tuple[str, str]:
    """Two fresh databases (Optuna, MLflow), dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = (f"effgan_optuna_{tag}", f"effgan_mlflow_{tag}")
    urls = tuple(pg.create_database(postgres, n) for n in names)
    for n in names:
        request.addfinalizer(lambda n=n: pg.drop_database(postgres, n))
    return urls


@pytest.fixture
def mlflow_server(databases, tmp_path, request) -> str:
    server = pg.MlflowServer(databases[1], tmp_path)
    request.addfinalizer(server.stop)
    server.wait_ready()
    return server.url


def test_two_workers_on_postgres_with_an_mlflow_server(databases, mlflow_server, tmp_path):
    """Two worker processes share the budget on PostgreSQL; one is SIGKILLed mid-trial, its
    trial is retried through the heartbeat; every trial is a run in the MLflow server."""
    two_workers(databases[0], mlflow_server, tmp_path, n=4, kill=True)
