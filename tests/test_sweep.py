"""`metaal sweep`: one vmapped program equals its runs trained alone; tables, files, W&B file."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pandas as pd
import pytest

from metaal.experiments import cli, configs, sweep
from metaal.experiments import train as train_mod
from metaal.strategies.learned import LearnedStrategy


def tiny():
    settings = configs.preset("tiny", "ppo")
    return dataclasses.replace(settings, run=dataclasses.replace(settings.run, eval_tasks=1))


def leaves(policy):
    return [np.asarray(x) for x in jax.tree.leaves(LearnedStrategy.load(policy).params)]


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_a_sweep_trains_each_combination_as_if_alone_and_scores_it_on_validation(tmp_path):
    settings = tiny()
    out = tmp_path / "sweep"
    table = sweep.sweep(settings, {"lr": [1e-3, 3e-3]}, 1, out, "offline", False)
    assert list(table["lr"]) == [1e-3, 3e-3] and list(table["seed"]) == [0, 0]
    # the second combination (not the first slot of the vmapped program) trained alone
    alone_settings = dataclasses.replace(settings, config=settings.config.replace(lr=3e-3))
    alone = train_mod.train(alone_settings, tmp_path / "alone", wandb_mode="disabled",
                            progress=False)  # fmt: skip
    gap = max(
        float(np.abs(a - b).max())
        for a, b in zip(
            leaves(alone), leaves(out / sweep.run_name({"lr": 3e-3}, 0) / "policy"), strict=True
        )
    )
    assert gap < 1e-5, gap  # the same run, up to vmapped float32 rounding
    for lr in (1e-3, 3e-3):
        folder = out / sweep.run_name({"lr": lr}, 0)
        last = json.loads((folder / train_mod.METRICS_FILE).read_text().splitlines()[-1])
        row = table[table["lr"] == lr].iloc[0]
        assert row["val_aulc"] == last["eval/learned/aulc"]  # the validation score
        assert json.loads((folder / train_mod.WANDB_FILE).read_text())["group"] == "sweep"
    a, b = (leaves(out / sweep.run_name({"lr": lr}, 0) / "policy") for lr in (1e-3, 3e-3))
    assert (
        max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) > 1e-4
    )  # the rates differ
    best = json.loads((out / "best.json").read_text())
    assert best["values"]["lr"] == float(table.loc[table["val_aulc"].idxmax(), "lr"])
    assert pd.read_csv(out / sweep.SWEEP_FILE)["val_aulc"].tolist() == table["val_aulc"].tolist()
    assert (out / "sweep.png").stat().st_size > 0 and "| lr | mean AULC" in (
        out / "sweep.md"
    ).read_text()
    with pytest.raises(ValueError, match="already holds results"):
        sweep.sweep(settings, {"lr": [1e-3]}, 1, out, "disabled", False)


def test_wandb_yaml_sweeps_any_flag_through_metaal_train(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    args = ["sweep", "--agent", "ppo", "--preset", "tiny", "--grid", "hidden=32,32:64,64",
            "--grid", "n_candidates=16,32", "--wandb-yaml", str(path)]  # fmt: skip
    assert cli.main(args) == 0
    document = json.loads(path.read_text())  # JSON is YAML
    assert document["parameters"] == {
        "hidden": {"values": ["32,32", "64,64"]},
        "n-candidates": {"values": ["16", "32"]},
    }
    assert document["command"] == ["metaal", "train", "--agent", "ppo", "--preset", "tiny",
                                   "${args}"]  # fmt: skip
    assert document["metric"] == {"name": "eval/learned/aulc", "goal": "maximize"}
    assert cli.main(args) == 2  # the file exists: not replaced
    assert "exists already" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "hidden=32,64"], "cannot be vmapped; sweepable: lr, gamma"),
        (["--grid", "lr"], "give FIELD=V1,V2"),
        (["--grid", "lr=fast"], "values must be numbers"),
        ([], "no --grid axis given"),
        (["--grid", "lr=1e-3", "--eval-tasks", "0"], "give --eval-tasks >= 1"),
    ],
)
def test_bad_sweeps_are_refused_before_training(extra, message, tmp_path, capsys):
    args = ["sweep", "--agent", "ppo", "--preset", "tiny", "--out", str(tmp_path / "s"), *extra]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_a_looped_sweep_trains_each_combination_bit_for_bit_as_alone(tmp_path):
    settings = tiny()
    out = tmp_path / "looped"
    sweep.sweep(settings, {"ent_coef": [0.0, 0.05]}, 1, out, "disabled", False, program="map")
    for coef in (0.0, 0.05):
        alone_settings = dataclasses.replace(
            settings, config=settings.config.replace(ent_coef=coef)
        )
        alone = train_mod.train(alone_settings, tmp_path / f"alone{coef}", wandb_mode="disabled",
                                progress=False)  # fmt: skip
        folder = out / sweep.run_name({"ent_coef": coef}, 0)
        for a, b in zip(leaves(alone), leaves(folder / "policy"), strict=True):
            np.testing.assert_array_equal(a, b)
