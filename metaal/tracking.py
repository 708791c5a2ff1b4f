"""Weights & Biases runs that never stop an experiment.

    run = init_run("metaal", run_name("heldout", "eval", 0), config, mode="offline", dir="runs")
    run.log({"eval/sklearn/iris/margin/test_accuracy": 0.9}, step=3)
    run.log_table("eval/summary", frame)
    run.finish()

Offline is the default (`wandb sync` uploads later), `disabled` logs
nothing. If wandb is not installed, cannot start (unreachable server, bad
key) or fails while logging, a warning is printed and the run becomes a
no-op, so evaluation and training always finish. Metric namespaces follow
CleanRL: `charts/`, `losses/`, `eval/<dataset>/...`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

MODES = ("online", "offline", "disabled")
#: Seconds wandb may take to start before the run falls back to a no-op.
INIT_TIMEOUT = 30.0


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
) -> Run:
    """Start a W&B run logging `config` in full; a no-op `Run` when disabled or when wandb fails."""
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
            settings=wandb.Settings(init_timeout=INIT_TIMEOUT, console="off", silent=True),
        )
    except Exception as err:  # not installed, unreachable server, bad key, ...
        warnings.warn(
            f"W&B could not start a run in {mode} mode ({type(err).__name__}: {err}); "
            "continuing without tracking",
            stacklevel=2,
        )
        return Run(None)
    return Run(run)
