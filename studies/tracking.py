"""Every trial is an MLflow run: the small Optuna -> MLflow bridge.

Why our own and not optuna-integration's MLflowCallback: that one is deprecated, and it opens
its run after the trial, whereas a trial's run here must exist before training so the harness
logs the per-epoch metrics into it. So a worker opens the run when the trial starts
(`start_run`), the harness trains into it, and `TrialRunCallback` (an Optuna study callback)
closes it with the trial's state and objective values. A trial whose worker was killed is
closed by `mark_stale` from whichever worker notices the lost heartbeat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from bench import tracker

RUN_ID_ATTR = "mlflow_run_id"
STATE_TAG = "effgan.trial_state"
# MLflow run status for each final trial state.
RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}


def default_tracking_uri() -> str:
    """The harness's default store ($MLFLOW_TRACKING_URI, else sqlite under mlruns/)."""
    return tracker.default_tracking_uri()


def ensure_store(tracking_uri: str) -> MlflowClient:
    """Create (migrate) the MLflow store once, in the parent: concurrent creation races."""
    return tracker.open_store(tracking_uri)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """The experiment's id, creating it (artifacts beside a SQLite store) if needed."""
    client = MlflowClient(tracking_uri)
    try:
        return tracker.ensure_experiment(client, name, tracking_uri)
    except tracker.StoreError:  # another machine may have created it in the meantime
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def system_attrs(trial: optuna.trial.Trial | FrozenTrial) -> dict[str, Any]:
    """A trial's system attrs (a live Trial no longer exposes them in Optuna 5)."""
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs
    return trial.storage.get_trial_system_attrs(trial._trial_id)


def _param_value(value: Any) -> str:
    return str(value)[:6000]


class TrialRuns:
    """Opens and closes the MLflow run of each trial of one study."""

    def __init__(self, tracking_uri: str, study_name: str, experiment: str, metrics: Sequence[str]):
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        self.experiment = experiment
        self.metrics = list(metrics)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        """Made on first use: creating a client may already create a SQLite store."""
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.tracking_uri, self.experiment)
        return self._experiment_id

    def run_name(self, trial: optuna.trial.Trial | FrozenTrial) -> str:
        return f"{self.study_name}/trial-{trial.number:04d}"

    def tags(self, trial: optuna.trial.Trial | FrozenTrial) -> dict[str, str]:
        """What ties a run to its trial (the MLflow UI filters on these)."""
        tags = {
            "effgan.study": self.study_name,
            "effgan.trial": str(trial.number),
            "effgan.objectives": ",".join(self.metrics),
        }
        retry_of = system_attrs(trial).get("failed_trial")
        if retry_of is not None:
            tags["effgan.retry_of"] = str(retry_of)
        return tags

    def start_run(self, trial: optuna.trial.Trial, params: dict[str, Any], run: Any) -> str:
        """Open the trial's run before training (harness tags + trial tags and params)."""
        tags = {**self.tags(trial), STATE_TAG: "RUNNING"}
        run_id = tracker.create_run(
            self.client, self.experiment_id, run, self.tracking_uri, extra_tags=tags
        )
        self.client.set_tag(run_id, "mlflow.runName", self.run_name(trial))
        self.client.log_batch(
            run_id, params=[Param(f"trial.{k}", _param_value(v)) for k, v in params.items()]
        )
        return run_id

    def logged_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of every metric the run logged."""
        return dict(self.client.get_run(run_id).data.metrics)

    def finish(self, trial: FrozenTrial, reason: str | None = None) -> None:
        """Write the trial's final state and objective values; end the run if still open."""
        if trial.user_attrs.get("effgan.surplus"):
            return  # never trained: nothing to show
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None:  # it failed before its run was opened: open one so it is seen
            run = self.client.create_run(
                self.experiment_id, run_name=self.run_name(trial), tags=self.tags(trial)
            )
            run_id = run.info.run_id
            params = [Param(f"trial.{k}", _param_value(v)) for k, v in trial.params.items()]
            self.client.log_batch(run_id, params=params)
        tags = [RunTag(STATE_TAG, trial.state.name)]
        if reason or trial.user_attrs.get("fail_reason"):
            text = reason or trial.user_attrs["fail_reason"]
            tags.append(RunTag("effgan.fail_reason", str(text)[:5000]))
        metrics = []
        if trial.values is not None:
            step = max(trial.intermediate_values, default=0)
            for metric, value in zip(self.metrics, trial.values, strict=True):
                if value is not None and math.isfinite(value):
                    metrics.append(Metric(f"objective.{metric}", float(value), 0, step))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        run = self.client.get_run(run_id)
        if run.info.status in ("RUNNING", "SCHEDULED") or trial.state != TrialState.COMPLETE:
            self.client.set_terminated(run_id, RUN_STATUS.get(trial.state, "FAILED"))

    def mark_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Heartbeat lost: the worker died mid-trial; close its run as FAILED."""
        self.finish(
            trial, reason="the worker stopped sending heartbeats (killed?); the trial is retried"
        )


class TrialRunCallback:
    """Optuna study callback: close each finished trial's MLflow run."""

    def __init__(self, runs: TrialRuns):
        self.runs = runs

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        try:
            self.runs.finish(trial)
        except Exception as e:  # the trial is already stored; never lose the worker over this
            optuna.logging.get_logger("studies").warning(
                f"trial {trial.number}: could not update its MLflow run: {e}"
            )
