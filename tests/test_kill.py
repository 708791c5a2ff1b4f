"""Kill tests (issue 12): SIGKILL and SIGINT at bad moments never lose or corrupt work.

- SIGKILL of `metaal evaluate` in the middle of writing results.csv leaves no
  results.csv, and the rerun takes over the dead run's lock (fast, in CI);
- `metaal train` stopped by SIGINT at a random moment of training, by SIGKILL
  during a checkpoint write and during the final evaluation, then resumed,
  ends with the policy and metrics.jsonl of an uninterrupted run (slow:
  several tiny training runs in subprocesses).

The SIGKILLs at a chosen moment come from a patched function inside the
subprocess that kills its own process, so the moment is exact, not a race.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from metaal.experiments import train as train_mod
from metaal.experiments.outputs import INTERRUPTED, LOCK_FILE
from metaal.strategies.learned import LearnedStrategy

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


def python(code: str, *argv: str, **kwargs) -> subprocess.Popen:
    """A subprocess running `code` with `argv` as sys.argv[1:]."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *argv], cwd=ROOT, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


def metaal(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metaal.experiments.cli", *argv], cwd=ROOT, env=ENV,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


#: Runs `metaal` with sys.argv[1:] after `PATCH` (which may kill the process at a set moment).
DRIVER = """
import os, signal, sys
from pathlib import Path
from metaal.agents import checkpoint
from metaal.experiments import cli, evaluate
import pandas as pd
def die():
    os.kill(os.getpid(), signal.SIGKILL)
{patch}
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_while_writing_results_csv_leaves_none_and_the_rerun_completes(tmp_path):
    out = tmp_path / "eval"
    argv = ["evaluate", "--suite", "sklearn/iris", "--strategies", "random,margin", "--seeds"]
    argv += ["2", "--budget", "4", "--out", str(out), "--wandb-mode", "disabled"]
    # results.csv is written last, through a temporary file: die half-way through writing it
    patch = """
real = pd.DataFrame.to_csv
def half_then_die(self, path, *args, **kwargs):
    if str(path).endswith("results.csv"):
        Path(path).write_text(real(self, None, *args, **kwargs)[:200])
        die()
    return real(self, path, *args, **kwargs)
pd.DataFrame.to_csv = half_then_die
"""
    proc = python(DRIVER.format(patch=patch), *argv)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.csv").exists()  # only its temporary sibling, never the name
    assert (out / "summary.csv").is_file()  # written completely before it
    assert (out / LOCK_FILE).read_text() == str(proc.pid)  # the dead run's lock is left
    rerun = metaal(*argv)
    assert rerun.returncode == 0, rerun.stderr
    assert f"taking over the lock of pid {proc.pid}, which no longer runs" in rerun.stderr
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 1 * 2 * 2 * (4 + 1)  # data sets x strategies x seeds x steps
    assert not (out / LOCK_FILE).exists()


# --- metaal train ------------------------------------------------------------------------

TRAIN = ["train", "--preset", "tiny", "--agent", "ppo", "--wandb-mode", "disabled", "--quiet"]


def reference(tmp_path: Path, total_steps: int) -> Path:
    """An uninterrupted in-process run with the same settings as the subprocesses'."""
    parser = argparse.ArgumentParser()
    argv = [*TRAIN[1:], "--total-steps", str(total_steps)]
    train_mod.add_arguments(parser, argv)
    settings = train_mod.settings_from_args(parser.parse_args(argv))
    out = tmp_path / "reference"
    train_mod.train(settings, out, wandb_mode="disabled", progress=False)
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """The same policy weights and metrics.jsonl (but for charts/SPS, a timing) as run `a`."""
    pa, pb = LearnedStrategy.load(a / "policy"), LearnedStrategy.load(b / "policy")
    for x, y in zip(jax.tree.leaves(pa.params), jax.tree.leaves(pb.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    def lines(folder):
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]

    assert lines(a) == lines(b)


RESUMED = re.compile(
    r"interrupted at update (\d+) \(env step (\d+)\); resume with `metaal train --resume (.+)`"
)


@pytest.mark.slow
def test_sigint_at_a_random_moment_of_training_then_resume_equals_an_uninterrupted_run(tmp_path):
    steps = 3200  # 200 updates in 100 chunks: several seconds of training after the compile
    out = tmp_path / "run"
    proc = python(DRIVER.format(patch=""), *TRAIN, "--total-steps", str(steps), "--out", str(out))
    deadline = time.time() + 600
    while not (out / "checkpoints").is_dir() and time.time() < deadline:
        time.sleep(0.05)  # training has started once the first checkpoint is written
    time.sleep(random.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == INTERRUPTED, (stdout, stderr)
    (line,) = stderr.strip().splitlines()  # one line, no traceback
    match = RESUMED.fullmatch(line)
    assert match and match.group(3) == str(out), line
    assert int(match.group(1)) < steps // 16 and not (out / LOCK_FILE).exists()
    resumed = metaal("train", "--resume", str(out), "--quiet", "--wandb-mode", "disabled")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference(tmp_path, steps), out)


KILL_IN_CHECKPOINT = """
real = checkpoint.save
calls = []
def save(run_dir, updates, runner, meta):
    calls.append(updates)
    if len(calls) == 2:  # the second checkpoint: die with its state file half written
        tmp = Path(run_dir) / checkpoint.CHECKPOINTS / f".tmp-{updates:010d}"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / checkpoint.STATE_FILE).write_bytes(b"half a state")
        die()
    return real(run_dir, updates, runner, meta)
checkpoint.save = save
"""

KILL_IN_FINAL_EVALUATION = """
real = evaluate.run_entries
calls = []
def run_entries(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # 80 steps: 3 chunks, each evaluated; the third is the final one
        die()
    return real(*args, **kwargs)
evaluate.run_entries = run_entries
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "patch", [KILL_IN_CHECKPOINT, KILL_IN_FINAL_EVALUATION], ids=["checkpoint", "final_eval"]
)
def test_sigkill_in_a_checkpoint_write_or_the_final_evaluation_then_resume(tmp_path, patch):
    out = tmp_path / "run"
    proc = python(DRIVER.format(patch=patch), *TRAIN, "--total-steps", "80", "--out", str(out))
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "policy").exists()
    resumed = metaal("train", "--resume", str(out), "--quiet", "--wandb-mode", "disabled")
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over the lock of pid {proc.pid}" in resumed.stderr
    assert_same_run(reference(tmp_path, 80), out)
    env_steps = [
        json.loads(x)["env_steps"] for x in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert env_steps == [32, 64, 96]  # the final evaluation's line exactly once
