"""Bad inputs across every command, the gym env and the Python API (issue 12), table-driven.

Each case asserts the exit code (CLI, run in-process through the command's
`main`) or the exception type (API), fragments of the message that name the
input, and that no file under the test folder was created or changed
(a snapshot of every file before and after). A few run as real subprocesses
to show there is no traceback and exactly one stderr line.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from metaal import envs
from metaal.data import DataError
from metaal.experiments.evaluate import evaluate
from metaal.experiments.outputs import LOCK_FILE, OutputError
from metaal.strategies.adapter import QueryStrategy
from metaal.strategies.learned import LearnedStrategy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Input files and folders shared by the cases; `cwd` is where default outputs would go."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    n = 60
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    label = np.where(x1 + 0.5 * x2 > 0, "spam", "ham").astype(object)
    label[12:] = None
    label[:2] = ["spam", "ham"]
    pd.DataFrame({"x1": x1, "x2": x2, "label": label}).to_csv(root / "pool.csv", index=False)
    one = label.copy()
    one[:12] = "spam"
    pd.DataFrame({"x1": x1, "x2": x2, "label": one}).to_csv(root / "oneclass.csv", index=False)
    (root / "afile").write_text("a file, not a folder\n")
    (root / "prev").mkdir()
    (root / "prev" / "results.csv").write_text("dataset,strategy\nold,old\n")
    (root / "outdir").mkdir()
    meta = root / "unfinished" / "checkpoints" / "0000000002"
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text('{"format_version": 1, "updates": 2}')
    (root / "locked").mkdir()
    (root / "locked" / LOCK_FILE).write_text(str(os.getpid()))  # this process: alive
    (root / "cwd").mkdir()
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def unchanged(fx: Path, before: dict[str, str]) -> None:
    after = snapshot(fx)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}  # fmt: skip
    assert not any((fx / "cwd").iterdir()), list((fx / "cwd").iterdir())


COMMAND_MODULES = {
    c: f"metaal.experiments.{c}" for c in ("evaluate", "train", "query", "demo", "datasets")
}


def run_main(command: str, argv: list[str]) -> int:
    module = importlib.import_module(COMMAND_MODULES[command])
    parser = argparse.ArgumentParser(prog=f"metaal {command}")
    module.add_arguments(parser, argv)
    return module.main(parser.parse_args(argv))


EV = ["--suite", "sklearn/iris", "--strategies", "random", "--seeds", "1", "--budget", "3"]
EV += ["--wandb-mode", "disabled"]
TR = ["--preset", "tiny", "--agent", "ppo", "--total-steps", "64", "--quiet"]
TR += ["--wandb-mode", "disabled"]
QY = ["--policy", "margin", "--data", "{fx}/pool.csv", "--target", "label"]
DQ = ["--quick", "--seeds", "1", "--budget", "3", "--no-oracle", "--wandb-mode", "disabled"]

# (case, command, argv with {fx} for the fixture folder, exit code, message fragments)
CLI_CASES = [
    ("evaluate out is a file", "evaluate", EV + ["--out", "{fx}/afile"], 2,
     ["metaal evaluate: error: --out {fx}/afile: is an existing file, not a folder"]),
    ("evaluate out /proc/x", "evaluate", EV + ["--out", "/proc/x"], 2,
     ["--out /proc/x: cannot create this folder", "choose a writable path"]),
    ("evaluate out holds results", "evaluate", EV + ["--out", "{fx}/prev"], 2,
     ["--out {fx}/prev: already holds results (results.csv)", "--overwrite"]),
    ("evaluate out locked by a live run", "evaluate", EV + ["--out", "{fx}/locked"], 2,
     [f"--out {{fx}}/locked: another metaal run (pid {os.getpid()}) is writing to this folder"]),
    ("evaluate --strategies ,", "evaluate", EV[:2] + ["--strategies", ","] + EV[4:], 2,
     ["--strategies ',' names no strategy"]),
    ("evaluate --strategies ''", "evaluate", EV[:2] + ["--strategies", ""] + EV[4:], 2,
     ["--strategies '' names no strategy"]),
    ("evaluate --policy margin", "evaluate", EV + ["--policy", "margin"], 2,
     ["--policy margin: 'margin' is a heuristic", "--strategies margin"]),
    ("evaluate --policy unfinished run", "evaluate", EV + ["--policy", "{fx}/unfinished"], 2,
     ["{fx}/unfinished: a training run that has not finished",
      "metaal train --resume {fx}/unfinished"]),
    ("evaluate --policy a folder", "evaluate", EV + ["--policy", "{fx}/outdir"], 2,
     ["{fx}/outdir: a folder without a policy file"]),
    ("evaluate --policy missing file", "evaluate", EV + ["--policy", "{fx}/nope.msgpack"], 2,
     ["{fx}/nope.msgpack: policy file not found"]),
    ("evaluate --seeds 0", "evaluate", EV + ["--seeds", "0"], 2, ["--seeds must be at least 1"]),
    ("evaluate --budget 0", "evaluate", EV + ["--budget", "0"], 2,
     ["--budget must be a positive number of queries, got 0"]),
    ("evaluate --budget 500", "evaluate", EV + ["--budget", "500"], 2,
     ["sklearn/iris: the pool has", "lower the budget"]),
    ("evaluate --n-initial 0", "evaluate", EV + ["--n-initial", "0"], 2,
     ["--n-initial must be at least 1"]),
    ("evaluate --n-candidates 0", "evaluate", EV + ["--n-candidates", "0"], 2,
     ["--n-candidates must be at least 1, got 0"]),
    ("evaluate --n-candidates 100000", "evaluate", EV + ["--n-candidates", "100000"], 2,
     ["--n-candidates 100000 exceeds the largest pool"]),
    ("evaluate --suite nosuch", "evaluate", ["--suite", "nosuch"], 2, ["unknown suite 'nosuch'"]),
    ("evaluate --data missing", "evaluate", ["--data", "{fx}/missing.csv", "--target", "y"], 2,
     ["{fx}/missing.csv"]),
    ("evaluate --learner nosuch", "evaluate", EV + ["--learner", "nosuch"], 2,
     ["unknown learner 'nosuch'"]),
    ("evaluate --shortlist -1", "evaluate", EV + ["--policy", "default", "--shortlist", "-1"], 2,
     ["--shortlist must be >= 0", "got -1"]),
    ("train out is a file", "train", TR + ["--out", "{fx}/afile"], 2,
     ["metaal train: error: --out {fx}/afile: is an existing file, not a folder"]),
    ("train out /proc/x", "train", TR + ["--out", "/proc/x"], 2,
     ["--out /proc/x: cannot create this folder"]),
    ("train out locked by a live run", "train", TR + ["--out", "{fx}/locked"], 2,
     ["--out {fx}/locked: another metaal run"]),
    ("train --total-steps 0", "train", TR + ["--total-steps", "0"], 2,
     ["--total-steps must be positive, got 0"]),
    ("train --budget 0", "train", TR + ["--budget", "0"], 2,
     ["--budget must be a positive number of queries, got 0"]),
    ("train --n-initial 0", "train", TR + ["--n-initial", "0"], 2,
     ["--n-initial must be at least 1, got 0"]),
    ("train --suite nosuch", "train", TR + ["--suite", "nosuch"], 2, ["unknown suite 'nosuch'"]),
    ("train --suite heldout", "train", TR + ["--suite", "heldout", "--out", "{fx}/cwd/t"], 2,
     ["held-out data set(s)"]),
    ("train --members 0", "train", TR + ["--members", "0"], 2, ["--members must be at least 1"]),
    ("train --member-group -1", "train", TR + ["--members", "2", "--member-group", "-1"], 2,
     ["--member-group must be >= 0"]),
    ("train --member-group without --members", "train", TR + ["--member-group", "2"], 2,
     ["--member-group sets how a vote's members train: add --members N"]),
    ("train --resume with --member-group", "train",
     ["--resume", "{fx}/unfinished", "--member-group", "1"], 2, ["drop --member-group"]),
    ("train --shortlist -1", "train", TR + ["--shortlist", "-1"], 2, ["--shortlist must be >= 0"]),
    ("train --resume missing", "train", ["--resume", "{fx}/nosuch", "--quiet"], 2,
     ["{fx}/nosuch: no such folder"]),
    ("train --resume with a config flag", "train",
     ["--resume", "{fx}/unfinished", "--total-steps", "10"], 2, ["drop --total-steps"]),
    ("evaluate --init centroids, more initial rows than the pool", "evaluate",
     EV + ["--init", "centroids", "--n-initial", "500", "--wandb-mode", "disabled"], 2,
     ["the initial set of 500 rows (--init centroids: one row per k-means centre) needs more",
      "lower --n-initial to at most"]),
    ("evaluate --strategies none without a policy", "evaluate",
     ["--suite", "heldout", "--strategies", "none"], 2,
     ["--strategies none runs only the learned policy; add --policy"]),
    ("query out is a folder", "query", QY + ["--out", "{fx}/outdir"], 2,
     ["metaal query: error: --out {fx}/outdir: is a folder; give a file path"]),
    ("query out /proc/x/picks.csv", "query", QY + ["--out", "/proc/x/picks.csv"], 2,
     ["--out /proc/x: cannot create this folder"]),
    ("query --batch-size 0", "query", QY + ["--batch-size", "0"], 2,
     ["--batch-size 0 must be between 1 and the 48 unlabelled rows"]),
    ("query --batch-size 1000", "query", QY + ["--batch-size", "1000"], 2,
     ["--batch-size 1000 must be between 1 and the 48 unlabelled rows"]),
    ("query one labelled class", "query", ["--data", "{fx}/oneclass.csv", "--target", "label"], 2,
     ["only 12 labelled row(s) covering 1 class(es)", "at least two classes"]),
    ("query one labelled class, semi-supervised", "query",
     ["--data", "{fx}/oneclass.csv", "--target", "label", "--learner", "self_training"], 2,
     ["only 12 labelled row(s) covering 1 class(es)", "at least two classes"]),
    ("query --learner self_training:base=nosuch", "query",
     QY + ["--learner", "self_training:base=nosuch"], 2,
     ["base='nosuch' is not a supervised learner; choose one of logreg, mlp, ensemble"]),
    ("query --policy missing", "query", ["--policy", "{fx}/nope.msgpack"] + QY[2:], 2,
     ["{fx}/nope.msgpack: policy file not found"]),
    ("query --policy unfinished run", "query", ["--policy", "{fx}/unfinished"] + QY[2:], 2,
     ["{fx}/unfinished: a training run that has not finished"]),
    ("query --learner nosuch", "query", QY + ["--learner", "nosuch"], 2,
     ["unknown learner 'nosuch'"]),
    ("query --data missing", "query", ["--data", "{fx}/missing.csv", "--target", "label"], 2,
     ["{fx}/missing.csv: file not found"]),
    ("demo --quick --seeds 0", "demo", ["--quick", "--seeds", "0"], 2,
     ["metaal demo: error: --seeds must be at least 1, got 0"]),
    ("demo --budget -1", "demo", ["--quick", "--budget", "-1"], 2,
     ["metaal demo: error: --budget must be a positive number of queries, got -1"]),
    ("demo out is a file", "demo", DQ + ["--out", "{fx}/afile"], 2,
     ["--out {fx}/afile: is an existing file"]),
    ("demo out /proc/x", "demo", DQ + ["--out", "/proc/x"], 2, ["--out /proc/x: cannot create"]),
    ("demo --devices 3", "demo", DQ + ["--devices", "3", "--out", "{fx}/cwd/d3"], 2,
     ["--devices 3: this process sees 1 device(s)"]),
    ("train --devices 3", "train", TR + ["--devices", "3"], 2,
     ["--devices 3: this process sees 1 device(s)"]),
    ("demo out locked by a live run", "demo", DQ + ["--out", "{fx}/locked"], 2,
     ["--out {fx}/locked: another metaal run"]),
    ("demo --learner nosuch", "demo", ["--quick", "--learner", "nosuch"], 2,
     ["unknown learner 'nosuch'"]),
    ("datasets --suite nosuch", "datasets", ["--suite", "nosuch"], 2,
     ["metaal datasets: error: unknown suite 'nosuch'"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "command, argv, code, fragments", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_input(fx, monkeypatch, capsys, command, argv, code, fragments):
    monkeypatch.chdir(fx / "cwd")  # default output folders would appear here
    monkeypatch.setenv("WANDB_MODE", "disabled")
    before = snapshot(fx)
    assert run_main(command, [a.replace("{fx}", str(fx)) for a in argv]) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment.replace("{fx}", str(fx)) in lines[0], lines[0]
    assert lines[0].startswith(f"metaal {command}: error: ")
    unchanged(fx, before)


# --- the gym env ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_env():
    env = gym.make(envs.ENV_ID)  # no arguments: the built-in synthetic task
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    "action", [32, -1, 1000, 2.7, 3.0, "a", None, np.array([1, 2]), [1]],
    ids=["32", "-1", "1000", "2.7", "3.0", "str", "None", "array12", "list"],
)  # fmt: skip
def test_step_outside_the_action_space_is_a_clear_error(bare_env, action):
    before = bare_env.unwrapped.state
    with pytest.raises(ValueError) as caught:
        bare_env.step(action)
    message = str(caught.value)
    assert f"action {action!r}" in message
    assert "not in the action space Discrete(32)" in message and "0 to 31" in message
    assert bare_env.unwrapped.state is before  # nothing was stepped


@pytest.fixture(scope="module")
def bare_vector_env():
    return gym.make_vec(envs.ENV_ID, num_envs=2, vectorization_mode="vector_entry_point")


@pytest.mark.parametrize(
    "actions, fragment",
    [
        (np.array([0, 99]), "env(s) [1] got actions outside the action space Discrete(32)"),
        (np.array([-1, 0]), "env(s) [0] got actions outside"),
        (np.array([0, 1, 2]), "expected 2 integers (shape (2,))"),
        (np.array([0.5, 1.0]), "got shape (2,) and dtype float64"),
        (3, "got shape () and dtype int64"),
    ],
    ids=["99", "-1", "three", "floats", "scalar"],
)
def test_vector_step_refuses_bad_actions(bare_vector_env, actions, fragment):
    with pytest.raises(ValueError, match="actions") as caught:
        bare_vector_env.step(actions)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"task": "nosuch"}, DataError, "unknown suite 'nosuch'"),
        ({"budget": 0}, ValueError, "budget must be a positive number of queries, got 0"),
        ({"n_candidates": 0}, ValueError, "n_candidates must be >= 1"),
        ({"budget": 5000}, ValueError, "synthetic-default: the pool has"),
        ({"reward": "gold"}, ValueError, "unknown reward 'gold'"),
    ],
    ids=["task", "budget0", "candidates0", "budget_too_big", "reward"],
)
def test_gym_make_refuses_bad_settings(fx, kwargs, error, fragment):
    before = snapshot(fx)
    with pytest.raises(error) as caught:
        gym.make(envs.ENV_ID, **kwargs)
    assert fragment in str(caught.value)
    unchanged(fx, before)


# --- the Python API -------------------------------------------------------------------


def xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.full(40, np.nan)
    y[:4] = [0, 1, 0, 1]
    return X, y


def _inf(X, y):
    X[5, 1] = np.inf
    return X, y


def _empty_column(X, y):
    X[:, 2] = np.nan
    return X, y


def _unlabelled(X, y):
    y[:] = np.nan
    return X, y


def _one_class(X, y):
    y[:4] = 1
    return X, y


QUERY_CASES = [
    ("inf in X", _inf, 3, "X: infinite values in feature column(s) [1] (first at row 5)"),
    ("empty column", _empty_column, 3, "X: feature column(s) [2] have no value at all"),
    ("y all NaN", _unlabelled, 3, "only 0 labelled row(s) covering 0 class(es)"),
    ("one class", _one_class, 3, "only 4 labelled row(s) covering 1 class(es)"),
    ("batch > pool", lambda X, y: (X, y), 100, "batch_size 100 exceeds the 36 selectable"),
    ("batch 0", lambda X, y: (X, y), 0, "batch_size must be a positive integer, got 0"),
]


@pytest.mark.parametrize("who", ["LearnedStrategy", "QueryStrategy"])
@pytest.mark.parametrize(
    "change, batch, fragment", [c[1:] for c in QUERY_CASES], ids=[c[0] for c in QUERY_CASES]
)
def test_python_query_refuses_what_the_cli_refuses(fx, who, change, batch, fragment):
    qs = LearnedStrategy.load("default") if who == "LearnedStrategy" else QueryStrategy("margin")
    X, y = change(*xy())
    before = snapshot(fx)
    with pytest.raises(ValueError) as caught:
        qs.query(X, y, batch_size=batch)
    assert fragment in str(caught.value)
    assert "--" not in str(caught.value)  # no command-line flag in a Python error
    unchanged(fx, before)


def test_the_cli_and_the_api_refuse_one_class_with_the_same_message(fx, capsys):
    X, y = _one_class(*xy())
    with pytest.raises(ValueError) as caught:
        LearnedStrategy.load("default").query(X, y)
    path = fx / "four.csv"
    labels = np.where(np.isnan(y), None, np.where(y == 1, "b", "a"))
    pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "label": labels}).to_csv(
        path, index=False
    )
    try:
        assert run_main("query", ["--data", str(path), "--target", "label"]) == 2
    finally:
        path.unlink()
    assert capsys.readouterr().err.strip() == f"metaal query: error: {caught.value}"


def _evaluate(**kwargs):
    base = dict(strategies=["random"], seeds=1, budget=3, wandb_mode="disabled", progress=False)
    tasks = kwargs.pop("tasks", ["sklearn/iris"])
    return evaluate(tasks, **{**base, **kwargs})


API_CASES = [
    ("load missing", lambda fx: LearnedStrategy.load(fx / "nope.msgpack"), ValueError,
     ["nope.msgpack: policy file not found; check the path"]),
    ("load unfinished run", lambda fx: LearnedStrategy.load(fx / "unfinished"), ValueError,
     ["unfinished: a training run that has not finished"]),
    ("oracle adapter", lambda fx: QueryStrategy("oracle"), ValueError, ["'oracle' is a reference"]),
    ("evaluate out_dir file", lambda fx: _evaluate(out_dir=fx / "afile"), OutputError,
     ["afile: is an existing file, not a folder"]),
    ("evaluate out_dir /proc/x", lambda fx: _evaluate(out_dir="/proc/x"), OutputError,
     ["/proc/x: cannot create this folder"]),
    ("evaluate out_dir holds results", lambda fx: _evaluate(out_dir=fx / "prev"), OutputError,
     ["prev: already holds results (results.csv)"]),
    ("evaluate out_dir locked", lambda fx: _evaluate(out_dir=fx / "locked"), OutputError,
     ["locked: another metaal run"]),
    ("evaluate strategies=[]", lambda fx: _evaluate(strategies=[], out_dir=None), ValueError,
     ["the list of strategies is empty"]),
    ("evaluate policy='margin'", lambda fx: _evaluate(policy="margin", out_dir=None), ValueError,
     ["'margin' is a heuristic, not a learned policy", "strategies=['margin']"]),
    ("evaluate seeds=0", lambda fx: _evaluate(seeds=0, out_dir=None), ValueError,
     ["seeds must be a positive count"]),
    ("evaluate budget=0", lambda fx: _evaluate(budget=0, out_dir=None), ValueError,
     ["budget must be a positive number of queries, got 0"]),
    ("evaluate unknown task", lambda fx: _evaluate(tasks=["nosuch/data"], out_dir=None),
     DataError, ["'nosuch/data' is neither a known data set"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "call, error, fragments", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_python_api_bad_input_raises(fx, monkeypatch, call, error, fragments):
    monkeypatch.chdir(fx / "cwd")
    before = snapshot(fx)
    with pytest.raises(error) as caught:
        call(fx)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert not isinstance(caught.value, SystemExit)
    unchanged(fx, before)


# --- a few through the real command: one line on stderr, no traceback ------------------


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["datasets", "--suite", "nosuch"], "metaal datasets: error: unknown suite 'nosuch'"),
        (["demo", "--quick", "--seeds", "0"], "metaal demo: error: --seeds must be at least 1"),
        (["query", "--data", "{fx}/pool.csv", "--target", "label", "--out", "{fx}/outdir"],
         "metaal query: error: --out {fx}/outdir: is a folder"),
    ],
    ids=["datasets", "demo", "query"],
)  # fmt: skip
def test_subprocess_bad_input_is_one_line_and_exit_code_2(fx, argv, fragment):
    before = snapshot(fx)
    argv = [a.replace("{fx}", str(fx)) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "metaal.experiments.cli", *argv],
        cwd=fx / "cwd", capture_output=True, text=True, timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(fragment.replace("{fx}", str(fx))), lines
    unchanged(fx, before)
