"""MLflow backend: params, tags, metrics by t_env, artifacts and an honest final status.

Default store: ``sqlite:///<cwd>/outputs/mlflow.db`` with artifacts under
``outputs/mlartifacts``; ``MLFLOW_TRACKING_URI`` or ``logger.mlflow.tracking_uri`` point runs
elsewhere (e.g. a tracking server). mlflow is imported lazily: it costs seconds of start-up.
Metrics are buffered and sent in batches. On resume the run is reopened and steps that were
already logged are not logged again, so a resumed run has no duplicated metric steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from runner.logging.base import Logger, RunInfo
from runner.registry import LOGGERS
from runner.tracking import default_tracking_uri, ensure_experiment

MAX_PARAM_LEN = 6000


@dataclass
class MLflowLoggerConfig:
    tracking_uri: Any = None
    """Tracking URI; default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db."""
    experiment_name: str = "hymarl"
    """MLflow experiment the runs are filed under."""
    flush_seconds: float = 10.0
    """Send buffered metrics at least this often."""
    log_checkpoint: bool = True
    """Upload the final checkpoint as an artifact."""
    name: str = MISSING


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@LOGGERS.register("mlflow", config=MLflowLoggerConfig)
class MLflowLogger(Logger):
    def __init__(self, cfg: MLflowLoggerConfig) -> None:
        self.cfg = cfg
        self.client: Any = None
        self.run_id: str | None = None
        self.tracking_uri = cfg.tracking_uri or default_tracking_uri()
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self._logged_upto: dict[str, int] = {}

    def start(self, info: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        resume_id = info.resume_state.get("mlflow_run_id")
        if resume_id:
            self.run_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            self.client.set_tag(resume_id, "resumed_at_t_env", str(info.t_env_start))
            self.client.set_tag(resume_id, "resume_overrides", info.tags.get("hydra_overrides", ""))
            if "error" in self.client.get_run(resume_id).data.tags:  # the reason it stopped last time
                self.client.delete_tag(resume_id, "error")
            # steps already in the store are not logged again (the resumed run recomputes them exactly)
            run = self.client.get_run(resume_id)
            for key in run.data.metrics:
                hist = self.client.get_metric_history(resume_id, key)
                self._logged_upto[key] = max(m.step for m in hist)
            return
        exp_id = ensure_experiment(self.client, self.cfg.experiment_name, self.tracking_uri)
        run = self.client.create_run(exp_id, run_name=info.run_name, tags=info.tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [
            Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in sorted(flatten(info.config).items())
        ]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100], synchronous=True)

    def log_stat(self, key: str, value: float, t_env: int) -> None:
        if self.run_id is None:
            return
        if t_env <= self._logged_upto.get(key, -1):
            return
        from mlflow.entities import Metric

        self._pending.append(Metric(key, float(value), int(time.time() * 1000), int(t_env)))
        if len(self._pending) >= 1000 or time.monotonic() - self._last_flush > self.cfg.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.run_id is None or not self._pending:
            return
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), 1000):
            self.client.log_batch(self.run_id, metrics=pending[i : i + 1000], synchronous=True)
        self._last_flush = time.monotonic()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id is None:
            return
        if path.name.endswith(".pt") and not self.cfg.log_checkpoint:
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def state(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id} if self.run_id else {}

    def describe(self) -> str | None:
        if self.run_id is None:
            return None
        return f"MLflow run {self.run_id} in {self.tracking_uri} (experiment '{self.cfg.experiment_name}')"

    def finish(self, status: str, error: str | None = None) -> None:
        if self.run_id is None:
            return
        try:
            self.flush()
        finally:
            if error:
                self.client.set_tag(self.run_id, "error", error[:5000])
            self.client.set_terminated(self.run_id, status=status)
