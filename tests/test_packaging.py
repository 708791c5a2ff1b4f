"""An installed metaal is one namespace and works beside a user's own envs, agents, experiments."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

GYM_AND_POLICY = """
import gymnasium as gym
import envs, agents, experiments
import metaal.envs  # registers metaal/ActiveLearning-v0
from metaal.strategies.learned import LearnedStrategy

for mine in (envs, agents, experiments):
    assert mine.__file__.startswith({cwd!r}), mine.__file__  # the user's own packages
env = gym.make("metaal/ActiveLearning-v0", task="sklearn/iris", budget=5)
obs, info = env.reset(seed=0)
assert obs["candidates"].shape[1] == 26
policy = LearnedStrategy.load("default")
print("ok", type(env.unwrapped).__module__, policy.config["scorer"])
"""


def _user_folder(tmp_path: Path) -> Path:
    for name in ("envs", "agents", "experiments"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHO = 'the user\\'s {name}'\n")
    return tmp_path


def _run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WANDB_MODE="disabled", WANDB_SILENT="true")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_readme_calls_work_from_a_folder_with_its_own_envs_agents_experiments(tmp_path):
    cwd = _user_folder(tmp_path)
    proc = _run(["-c", GYM_AND_POLICY.format(cwd=str(cwd))], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok metaal.envs.gym metaal.policy_net:ensemble_scorer" in proc.stdout

    out = cwd / "eval"
    proc = _run(
        ["-m", "metaal.experiments.cli", "evaluate", "--suite", "sklearn/iris",
         "--strategies", "random,margin", "--seeds", "2", "--budget", "4", "--out", str(out),
         "--wandb-mode", "disabled"],
        cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert set(results.strategy) == {"random", "margin"} and len(results) == 2 * 2 * 5


def test_every_package_folder_is_installed_under_the_metaal_namespace():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(project["packages"])
    mapping = project["package-dir"]
    found = set()
    for top in ("metaal", "envs", "agents", "experiments"):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            name = ".".join(parts if top == "metaal" else ("metaal", *parts))
            found.add(name)
    assert found == listed  # a new sub-package must be listed, or a plain install lacks it
    assert {mapping[f"metaal.{top}"] for top in ("envs", "agents", "experiments")} == {
        "envs",
        "agents",
        "experiments",
    }
    assert not any(p.split(".")[0] != "metaal" for p in listed)
