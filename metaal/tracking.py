"""Weights & Biases runs that never stop an experiment.

    run = init_run("metaal", run_name("heldout", "eval", 0), config, mode="offline", dir="runs")
    run.log({"eval/sklearn/iris/margin/test_accuracy": 0.9}, step=3)
    run.log_table("eval/summary", frame)
    run.log_artifact("evaluation-heldout", "evaluation", ["runs/results.csv"])
    run.finish()

Offline is the default (`wandb sync` uploads later), `disabled` logs
nothing. If wandb is not installed, cannot start (unreachable server, bad
key) or fails while logging, a warning is printed and the run becomes a
no-op, so evaluation and training always finish. Metric namespaces follow
CleanRL: `charts/`, `losses/`, `eval/<dataset>/...`.

Runs carry a `group` (the runs of one experiment: a training run and its
evaluations, the members of a vote), a `job_type` (`train`, `evaluate`) and
`tags`; `run_id` continues an earlier run (`resume="allow"`), which is how a
resumed `metaal train` keeps logging to the W&B run it started.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

MODES = ("online", "offline", "disabled")
#: Seconds wandb may take to start before the run falls back to a no-op.
INIT_TIMEOUT = 30.0
#: W&B's longest tag; longer tags are cut to this.
MAX_TAG = 64


def artifact_name(text: str) -> str:
    """`text` with every character W&B refuses in artifact names (not `A-Za-z0-9._-`) as `-`."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def run_name(suite: str, what: str, seed: int, when: float | None = None) -> str:
    """`{suite}__{agent-or-eval}__{seed}__{unix time}`, CleanRL's run naming."""
    safe_suite = suite.replace("/", "-").replace(" ", "_")
    return f"{safe_suite}__{what}__{seed}__{int(time.time() if when is None else when)}"


class Run:
    """A W&B run, or a no-op stand-in; every method swallows wandb errors with one warning."""

    def __init__(self, run: Any = None) -> None:
        self._run = run

    @property
    def enabled(self) -> bool:
        """Whether anything is being recorded."""
        return self._run is not None

    @property
    def id(self) -> str | None:
        """The W&B run id (None for a no-op run); `init_run(run_id=...)` continues the run."""
        return str(self._run.id) if self._run is not None else None

    @property
    def dir(self) -> Path | None:
        """The run's local files folder (None for a no-op run)."""
        return Path(self._run.dir) if self._run is not None else None

    def _call(self, what: str, fn, *args: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # a tracking failure must never end the experiment
            warnings.warn(
                f"wandb failed to {what} ({type(err).__name__}: {err}); "
                "continuing without tracking",
                stacklevel=3,
            )
            self._run = None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalars (or wandb objects) at `step`."""
        self._call("log", lambda: self._run.log(dict(metrics), step=step))

    def log_table(self, key: str, frame: pd.DataFrame) -> None:
        """Log a DataFrame as a `wandb.Table` under `key`."""
        import wandb

        self._call("log a table", lambda: self._run.log({key: wandb.Table(dataframe=frame)}))

    def log_images(self, images: Mapping[str, str | Path]) -> None:
        """Log image files as `wandb.Image`s, one per key."""
        import wandb

        self._call(
            "log images",
            lambda: self._run.log({k: wandb.Image(str(p)) for k, p in images.items()}),
        )

    def log_artifact(self, name: str, type: str, paths: Iterable[str | Path]) -> None:
        """Log files as one `wandb.Artifact` `name` of `type` (offline: stored for `wandb sync`).

        `name` is made W&B-safe (`artifact_name`). A missing file logs no
        artifact (one warning; the run goes on); a wandb failure makes the run
        a no-op, as in every method.
        """
        if self._run is None:
            return
        paths = [Path(p) for p in paths]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            warnings.warn(
                f"W&B artifact {name!r} not logged: no file {', '.join(missing)}", stacklevel=2
            )
            return
        import wandb

        def log() -> None:
            artifact = wandb.Artifact(artifact_name(name), type=type)
            for path in paths:
                artifact.add_file(str(path))
            self._run.log_artifact(artifact)

        self._call("log an artifact", log)

    def update_summary(self, values: Mapping[str, Any]) -> None:
        """Set run-summary values (final numbers shown in the runs table)."""
        self._call("update the summary", lambda: self._run.summary.update(dict(values)))

    def finish(self) -> None:
        """Close the run (writes the offline files)."""
        self._call("finish", self._run.finish if self._run is not None else None)
        self._run = None


def init_run(
    project: str,
    name: str,
    config: Mapping[str, Any],
    mode: str = "offline",
    dir: str | Path | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    run_id: str | None = None,
) -> Run:
    """Start a W&B run logging `config` in full; a no-op `Run` when disabled or when wandb fails.

    `group`, `job_type` and `tags` (each tag cut to `MAX_TAG` characters) go
    to `wandb.init`; `run_id` continues the run with that id (`resume="allow"`:
    a new run with that id if there is none).
    """
    if mode not in MODES:
        raise ValueError(f"unknown W&B mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "disabled":
        return Run(None)
    try:
        import wandb

        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project,
            name=name,
            config=dict(config),
            mode=mode,
            dir=None if dir is None else str(dir),
            group=group or None,
            job_type=job_type or None,
            tags=[str(t)[:MAX_TAG] for t in tags] or None,
            id=run_id or None,
            resume="allow" if run_id else None,
            # always a run of its own: never one left open by a failure or the caller's
            # (wandb's default returns the open one)
            settings=wandb.Settings(
                init_timeout=INIT_TIMEOUT, console="off", silent=True, reinit="create_new"
            ),
        )
    except Exception as err:  # not installed, unreachable server, bad key, ...
        warnings.warn(
            f"W&B could not start a run in {mode} mode ({type(err).__name__}: {err}); "
            "continuing without tracking",
            stacklevel=2,
        )
        return Run(None)
    return Run(run)
