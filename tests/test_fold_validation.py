"""Leave-tasks-out validation (`metaal.experiments.fold_validation`, issue 16's protocol).

The per-fold commands carry the fold's suites, seed and folder; the heuristics run is
checked to cover every fold before any compute; a rerun resumes only the same protocol;
end to end (slow), each fold's policy is ranked on its own data sets and a finished fold is
not trained again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaal.agents import checkpoint
from metaal.data import suite_names
from metaal.experiments import cli
from metaal.experiments import fold_validation as fv


def _heuristics(datasets, seeds, strategies=("margin", "badge")) -> pd.DataFrame:
    rows = [
        (d, s, seed, step, 5 + step, 0.5 + 0.01 * step)
        for d in datasets
        for s in strategies
        for seed in seeds
        for step in range(3)
    ]
    columns = ["dataset", "strategy", "seed", "step", "n_labeled", "test_accuracy"]
    return pd.DataFrame(rows, columns=columns)


def test_fold_commands_carry_the_folds_suites_seed_and_folder():
    recipe = ["--agent", "ppo", "--init-policy", "runs/a1/f{fold}/policy", "--lr", "1e-4"]
    argv = fv.train_argv(recipe, 2, "train-fit:{fold}", Path("out/f2"))
    assert argv == [
        "train", "--agent", "ppo", "--init-policy", "runs/a1/f2/policy", "--lr", "1e-4",
        "--suite", "train-fit:2", "--seed", "2", "--out", "out/f2",
    ]  # fmt: skip
    assert fv.train_argv([], 1, "train-fit:{fold}", Path("o"), first_seed=3)[-3] == "4"
    for flag in ("--suite", "--seed=3", "--out", "--resume"):
        with pytest.raises(ValueError, match="set by the protocol"):
            fv.train_argv(["--agent", "imitation", flag, "x"], 0, "train-fit:{fold}", Path("o"))
    ev = fv.evaluate_argv(
        1, "train-val:{fold}", Path("runs/rec/f1/policy"), Path("v"), 20, 10000, 100
    )
    assert ev[ev.index("--suite") + 1] == "train-val:1"
    assert ev[ev.index("--name") + 1] == "rec_f1"
    # logged offline by default, the folds of one validation in one W&B group
    assert ev[ev.index("--wandb-mode") + 1] == "offline"
    assert ev[ev.index("--wandb-group") + 1] == "rec"
    assert (
        ev[ev.index("--first-seed") + 1] == "10000" and ev[ev.index("--strategies") + 1] == "none"
    )


def test_the_heuristics_run_must_cover_every_fold_before_any_compute():
    seeds = range(10000, 10004)
    full = _heuristics(suite_names("train"), seeds)
    fv.check_heuristics(full, "train-val:{fold}", [0, 1, 2], seeds)
    # a run of fold 0's data sets only covers fold 0
    part = _heuristics(suite_names("train-val:0"), seeds)
    fv.check_heuristics(part, "train-val:{fold}", [0], seeds)
    with pytest.raises(ValueError, match=r"lacks data set keel/bands \(of train-val:1\)"):
        fv.check_heuristics(part, "train-val:{fold}", [0, 1], seeds)
    with pytest.raises(ValueError, match=r"at seeds \[10004\]"):
        fv.check_heuristics(full, "train-val:{fold}", [2], range(10000, 10005))
    with pytest.raises(ValueError, match=r"lacks \['badge'\]"):
        fv.check_heuristics(full[full["strategy"] == "margin"], "train-val:{fold}", [0], seeds)
    # opponents beyond margin and BADGE must be in the run too
    with pytest.raises(ValueError, match=r"lacks \['emoc'\].*--opponents"):
        fv.check_heuristics(full, "train-val:{fold}", [0], seeds, ("margin", "emoc"))
    wider = _heuristics(suite_names("train"), seeds, ("margin", "badge", "emoc"))
    fv.check_heuristics(wider, "train-val:{fold}", [0, 1, 2], seeds, ("margin", "emoc"))


def test_the_verdict_needs_every_fold_above_margin():
    assert fv.verdict(pd.DataFrame({"AULC - margin": [0.004, 0.0001, 0.002]}))
    assert not fv.verdict(pd.DataFrame({"AULC - margin": [0.004, -0.0001, 0.002]}))
    assert not fv.verdict(pd.DataFrame({"AULC - margin": [0.004, 0.0, 0.002]}))  # a tie


def test_bad_arguments_are_refused_before_any_compute(tmp_path, capsys):
    heur = tmp_path / "heur"
    heur.mkdir()
    _heuristics(suite_names("train"), range(10000, 10020)).to_csv(heur / "results.csv")
    out = tmp_path / "folds"
    base = ["--heuristics", str(heur), "--out", str(out)]
    cases = [
        (base + ["--", "--agent", "imitation", "--suite", "train"], "set by the protocol"),
        (base + ["--seeds", "30", "--", "--agent", "imitation"], "at seeds"),
        (base + ["--folds", "0,5", "--", "--agent", "imitation"], "the fold must be 0..2"),
        (["--heuristics", str(tmp_path), "--out", str(out)], "no results.csv"),
        (base + ["--opponents", "margin,eer", "--", "--agent", "imitation"], "lacks ['eer']"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:
            fv.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()  # nothing is left behind by a refusal
    # a folder holding another protocol is refused, and so is one that is not a fold validation
    out.mkdir()
    (out / fv.PROTOCOL_FILE).write_text(json.dumps({"recipe": ["--agent", "ppo"]}))
    (out / "f0").mkdir()  # a fold has started
    with pytest.raises(SystemExit):
        fv.main(base + ["--", "--agent", "imitation"])
    assert "holds a fold validation with other arguments" in capsys.readouterr().err
    # with no fold started (its first training refused the recipe), the new protocol is taken
    (out / "f0").rmdir()
    fv.claim(out, {"recipe": ["--agent", "imitation"]})
    assert json.loads((out / fv.PROTOCOL_FILE).read_text()) == {"recipe": ["--agent", "imitation"]}
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        fv.main(["--heuristics", str(heur), "--out", str(other), "--", "--agent", "imitation"])
    assert "is not a fold validation" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_end_to_end_on_two_synthetic_folds(tmp_path, capsys):
    # fold K trains on synthetic/K and is validated on synthetic/1K (10 and 11)
    env = ["--budget", "4", "--wandb-mode", "disabled"]
    heur = tmp_path / "heur"
    code = cli.main(
        ["evaluate", "--suite", "synthetic/10+synthetic/11", "--seeds", "3", "--first-seed",
         "10000", "--strategies", "margin,badge,random", *env, "--out", str(heur)]
    )  # fmt: skip
    assert code == 0
    out = tmp_path / "folds"
    argv = [
        "--heuristics", str(heur), "--out", str(out), "--folds", "0,1", "--seeds", "3",
        "--budget", "4", "--fit-suite", "synthetic/{fold}", "--val-suite", "synthetic/1{fold}",
        "--", "--agent", "imitation", "--preset", "tiny", "--budget", "4",
    ]  # fmt: skip
    assert fv.main(argv) == 0
    text = (out / "folds.md").read_text()
    assert "folds_f0" in text and "folds_f1" in text
    # the pooled row ranks both folds' policies on both validation data sets
    assert [r.split(" | ")[-1] for r in text.splitlines() if "folds_pooled" in r][0][-4:] == "/2 |"
    for k in (0, 1):
        val = pd.read_csv(out / f"val_f{k}" / "results.csv")
        assert set(val["dataset"]) == {f"synthetic/1{k}"}  # each fold on its own data set
        meta = checkpoint.read_meta(checkpoint.list_checkpoints(out / f"f{k}")[-1])
        assert meta["settings"]["run"]["seed"] == k  # seed = fold
        assert meta["settings"]["data"]["suite"] == f"synthetic/{k}"
    line = text.split("verdict: ")[1]
    diffs = [float(w) for w in line.split("AULC - margin ")[1].split(",")[0].split(" / ")]
    assert len(diffs) == 2
    assert line.startswith("counts") == bool(np.all(np.array(diffs) > 0))
    # a rerun trains nothing again: the policies are untouched
    stamp = (out / "f0" / "policy").stat().st_mtime_ns
    capsys.readouterr()
    assert fv.main(argv) == 0
    assert (out / "f0" / "policy").stat().st_mtime_ns == stamp
    assert "compiling" not in capsys.readouterr().out
