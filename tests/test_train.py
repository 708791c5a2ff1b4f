"""`metaal train`: exact resume, the command end to end, and clear errors on bad input."""

import argparse
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from metaal.agents import checkpoint, rollout
from metaal.data import DataError
from metaal.experiments import configs
from metaal.experiments import train as train_mod
from metaal.strategies.learned import LearnedStrategy

ROOT = Path(__file__).resolve().parents[1]


def tiny(agent="dqn", **run):
    settings = configs.preset("tiny", agent)
    return dataclasses.replace(settings, run=dataclasses.replace(settings.run, **run))


def runner_leaves(run_dir):
    """Every array of the newest checkpoint of a run (keys as raw data)."""
    settings = configs.TrainSettings.from_dict(
        checkpoint.read_meta(checkpoint.latest(run_dir))["settings"]
    )
    init, _ = train_mod.compiled(settings.agent, settings.config, settings.run.chunk_updates)
    env = train_mod.make_env(settings.config.env)
    tasks, _, _ = train_mod.load_training_tasks(settings, env, jax.random.key(0))
    template = jax.eval_shape(
        lambda k, t: rollout.detach_params(init(k, t)), jax.random.key(0), tasks
    )
    restored = checkpoint.restore(checkpoint.latest(run_dir), template)
    return [np.asarray(checkpoint.keys_as_data(x)) for x in jax.tree.leaves(restored)]


def test_killed_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path):
    # DQN: its carry holds the replay buffer, the hardest state to restore exactly
    settings = tiny("dqn", eval_tasks=0)
    full = train_mod.train(settings, tmp_path / "full", wandb_mode="disabled", progress=False)
    stopped = train_mod.train(
        settings, tmp_path / "resumed", wandb_mode="disabled", progress=False,
        stop_after_chunks=3,
    )  # fmt: skip
    assert full is not None and stopped is None
    meta = checkpoint.read_meta(checkpoint.latest(tmp_path / "resumed"))
    assert meta["updates"] == 3 * settings.run.chunk_updates
    resumed = train_mod.train(
        None, tmp_path / "resumed", resume=True, wandb_mode="disabled", progress=False
    )
    a, b = runner_leaves(tmp_path / "full"), runner_leaves(tmp_path / "resumed")
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    pa = LearnedStrategy.load(full).params
    pb = LearnedStrategy.load(resumed).params
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_a_vote_of_seeds_resumes_a_killed_member_and_matches_an_uninterrupted_vote(tmp_path):
    settings = dataclasses.replace(tiny("ppo", eval_tasks=0), shortlist=3)
    quiet = {"wandb_mode": "disabled", "progress": False}
    # one member after another (--member-group 1), each its own program
    full = train_mod.train_members(settings, tmp_path / "full", members=2, member_group=1, **quiet)
    # the same vote, killed during its second member, then resumed
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / train_mod.MEMBERS_FILE).write_text(
        (tmp_path / "full" / train_mod.MEMBERS_FILE).read_text()
    )
    seed1 = dataclasses.replace(settings, run=dataclasses.replace(settings.run, seed=1))
    train_mod.train(settings, train_mod.member_dir(killed, 0), **quiet)
    train_mod.train(seed1, train_mod.member_dir(killed, 1), stop_after_chunks=1, **quiet)
    resumed = train_mod.train_members(None, killed, resume=True, **quiet)
    a, b = LearnedStrategy.load(full), LearnedStrategy.load(resumed)
    assert a.config["scorer"] == "metaal.policy_net:ensemble_scorer"
    assert [m["seed"] for m in a.config["members"]] == [0, 1]
    assert a.config["shortlist"] == b.config["shortlist"] == 3  # kept through the resume
    assert a.config["member_scorer"] == "metaal.policy_net:shortlisted_scorer"
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    single = LearnedStrategy.load(train_mod.member_dir(tmp_path / "full", 0) / "policy")
    for x, y in zip(jax.tree.leaves(single.params), jax.tree.leaves(a.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y)[0])  # member 0 = seed 0
    with pytest.raises(ValueError, match="already holds a training run"):
        train_mod.train_members(settings, tmp_path / "full", members=2, **quiet)


def test_one_member_exports_that_members_own_policy(tmp_path):
    settings = tiny("ppo", eval_tasks=0)
    out = tmp_path / "one"
    policy = LearnedStrategy.load(
        train_mod.train_members(settings, out, members=1, wandb_mode="disabled", progress=False)
    )
    member = LearnedStrategy.load(train_mod.member_dir(out, 0) / "policy")
    assert policy.config["scorer"] == member.config["scorer"] != "metaal.policy_net:ensemble_scorer"
    assert "members" not in policy.config
    for x, y in zip(jax.tree.leaves(policy.params), jax.tree.leaves(member.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def run_cli(*args, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "metaal.experiments.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_train_command_end_to_end_then_evaluate_its_policy(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train", "--preset", "tiny", "--agent", "ppo", "--out", str(out), "--wandb-mode",
        "disabled", "--quiet", "--total-steps", "64",
    )  # fmt: skip
    assert "policy written to" in proc.stdout
    policy = LearnedStrategy.load(out / "policy")
    assert policy.config["agent"] == "ppo"
    assert policy.config["env_steps"] == 64
    assert policy.config["env"]["budget"] == configs.env_config("tiny").budget
    meta = checkpoint.read_meta(checkpoint.latest(out))
    assert meta["settings"]["data"]["suite"] == "synthetic:2"
    assert meta["command"].startswith("metaal train --preset tiny")

    ev = tmp_path / "eval"
    run_cli(
        "evaluate", "--suite", "synthetic/5", "--policy", str(out / "policy"), "--strategies",
        "random", "--seeds", "2", "--budget", "4", "--n-candidates", "8", "--out", str(ev),
        "--wandb-mode", "disabled",
    )  # fmt: skip
    results = pd.read_csv(ev / "results.csv")
    assert set(results["strategy"]) == {"random", "learned"}
    assert len(results) == 2 * 2 * (4 + 1)  # strategies x seeds x (budget + 1) steps


# --- bad input ------------------------------------------------------------------------


def parse(*argv):
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser, argv)
    return parser.parse_args(argv)


def test_unknown_agent_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        parse("--agent", "sac")
    assert "dqn" in capsys.readouterr().err
    with pytest.raises(ValueError, match="known agents: dqn, imitation, ppo"):
        configs.preset("tiny", "sac")


def test_unknown_suite_lists_the_known_ones(tmp_path, capsys):
    args = parse("--preset", "tiny", "--suite", "nope", "--out", str(tmp_path), "--quiet")
    assert train_mod.main(args) == 2
    err = capsys.readouterr().err
    assert "unknown suite 'nope'" in err
    assert "train, heldout, fm-train, fm-heldout, synthetic" in err


def test_flags_belong_to_the_chosen_agent_and_members_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit):  # --n-rounds is an imitation setting, not PPO's
        parse("--agent", "ppo", "--n-rounds", "3", "--out", str(tmp_path), "--quiet")
    assert "unrecognized arguments: --n-rounds" in capsys.readouterr().err
    for agent in ("ppo", "imitation"):
        args = parse("--agent", agent, "--members", "0", "--out", str(tmp_path), "--quiet")
        assert train_mod.main(args) == 2
        assert "--members must be at least 1" in capsys.readouterr().err


def test_heldout_data_is_refused_for_training():
    with pytest.raises(DataError, match="held-out"):
        train_mod.training_names("train+sklearn/iris")


@pytest.mark.parametrize("case", ["no_folder", "empty_folder", "corrupt", "version"])
def test_resume_errors_name_the_path_and_the_fix(tmp_path, capsys, case):
    run_dir = tmp_path / "run"
    if case != "no_folder":
        run_dir.mkdir()
    if case in ("corrupt", "version"):
        folder = checkpoint.save(run_dir, 2, {"w": np.zeros(2)}, {"settings": {}})
        if case == "corrupt":
            (folder / checkpoint.STATE_FILE).write_bytes(b"garbage")
            (folder / checkpoint.META_FILE).write_text("{not json")
        else:
            meta = json.loads((folder / checkpoint.META_FILE).read_text())
            meta["format_version"] = 0
            (folder / checkpoint.META_FILE).write_text(json.dumps(meta))
    assert train_mod.main(parse("--resume", str(run_dir), "--quiet")) == 2
    err = capsys.readouterr().err
    expected = {
        "no_folder": "no such folder",
        "empty_folder": "holds no training run",
        "corrupt": "unreadable checkpoint",
        "version": "format version 0",
    }[case]
    assert expected in err and str(run_dir) in err


def test_resume_refuses_config_options(tmp_path, capsys):
    assert train_mod.main(parse("--resume", str(tmp_path), "--total-steps", "10")) == 2
    assert "drop --total-steps" in capsys.readouterr().err


def test_a_new_run_refuses_a_folder_holding_one(tmp_path):
    checkpoint.save(tmp_path, 2, {"w": np.zeros(2)}, {})
    with pytest.raises(checkpoint.CheckpointError, match="--resume"):
        train_mod.train(tiny(), tmp_path, wandb_mode="disabled", progress=False)


def test_settings_round_to_whole_chunks_and_survive_json():
    settings = train_mod.finalise(tiny("ppo", chunk_updates=3))
    assert settings.config.num_updates % settings.run.chunk_updates == 0
    assert settings.config.total_steps >= configs.preset("tiny", "ppo").config.total_steps
    again = configs.TrainSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again == settings


def test_the_recorded_default_command_is_the_demos_recipe():
    argv = configs.DEFAULT_POLICY_COMMAND.split()[2:]  # drop "metaal train"
    args = parse(*argv)
    assert args.members == configs.DEFAULT_POLICY_MEMBERS
    for seed in range(configs.DEFAULT_POLICY_MEMBERS):
        setattr(args, "run.seed", seed)  # the flag --seed sets the run config's seed
        assert train_mod.settings_from_args(args) == configs.default_policy_settings(seed)
    shipped = LearnedStrategy.load("default").config
    assert shipped["command"] == configs.DEFAULT_POLICY_COMMAND
    assert shipped["shortlist"] == configs.DEFAULT_POLICY_SHORTLIST
    assert [m["seed"] for m in shipped["members"]] == list(range(configs.DEFAULT_POLICY_MEMBERS))
    assert {m["env_steps"] for m in shipped["members"]} == {2_007_040}


def test_budget_and_candidate_options_set_the_training_env():
    settings = train_mod.settings_from_args(parse("--budget", "7", "--n-candidates", "12"))
    default = configs.preset("demo", "ppo").config.env
    assert (settings.config.env.budget, settings.config.env.n_candidates) == (7, 12)
    assert settings.config.env.fit_steps == default.fit_steps  # the rest is the preset's
    with pytest.raises(ValueError, match="budget must be a positive"):
        train_mod.settings_from_args(parse("--budget", "0"))
    # `none` sets None (the whole pool), which must not read as "not given"
    whole = train_mod.settings_from_args(parse("--n-candidates", "none"))
    assert whole.config.env.n_candidates is None and default.n_candidates == 32


def test_ppo_selector_flags_reach_the_config():
    args = parse("--proposers", "margin,badge", "--init-policy", "runs/x/policy")
    settings = train_mod.settings_from_args(args)
    assert settings.config.proposers == ("margin", "badge")
    assert settings.config.init_policy == "runs/x/policy"


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_dqn_and_ppo_chunks_hold_as_many_env_steps(name):
    ppo, dqn = configs.preset(name, "ppo"), configs.preset(name, "dqn")
    ppo_chunk = ppo.run.chunk_updates * ppo.config.steps_per_update
    assert dqn.run.chunk_updates * dqn.config.steps_per_update == ppo_chunk
    assert dqn.run.eval_every == ppo.run.eval_every  # so both evaluate as often, in env steps


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_training_time_evaluation_equals_metaal_evaluate_of_the_exported_policy(tmp_path):
    from metaal.experiments import evaluate

    settings = dataclasses.replace(tiny("ppo", eval_tasks=1, eval_seeds=3), shortlist=2)
    out = tmp_path / "run"
    policy = train_mod.train(settings, out, wandb_mode="disabled", progress=False)
    logged = json.loads((out / train_mod.METRICS_FILE).read_text().splitlines()[-1])
    assert LearnedStrategy.load(policy).config["shortlist"] == 2
    names = train_mod.training_names(settings.data.suite)[: settings.run.eval_tasks]
    results = evaluate.evaluate(
        names,
        strategies=["random", "margin"],
        seeds=train_mod.eval_seeds(settings),
        policy=policy,
        out_dir=None,
        progress=False,
        env=settings.config.env,
        split=train_mod.split_of(settings.data),
    )
    aulc = results.groupby(["strategy", "seed"])["test_accuracy"].mean().groupby("strategy").mean()
    for strategy in train_mod.EVAL_STRATEGIES:
        assert logged[f"eval/{strategy}/aulc"] == pytest.approx(aulc[strategy], abs=1e-12)
    assert aulc["learned"] != aulc["random"] or aulc["learned"] != aulc["margin"]


def test_imitation_is_a_normal_agent_with_checkpoints_wandb_and_an_exact_resume(tmp_path):
    from test_evaluate import wandb_records

    out = tmp_path / "imitation"
    args = parse("--agent", "imitation", "--preset", "tiny", "--out", str(out), "--quiet",
                 "--wandb-mode", "offline")  # fmt: skip
    assert train_mod.main(args) == 0
    settings = configs.preset("tiny", "imitation")
    policy = LearnedStrategy.load(out / "policy")
    assert policy.config["agent"] == "imitation" and policy.config["shortlist"] == 4
    assert len(checkpoint.list_checkpoints(out)) == settings.config.n_rounds  # one per round
    (run_file,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    history, config = {}, {}
    for record in wandb_records(Path(run_file)):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        if record.WhichOneof("record_type") == "run":
            config = {i.key: json.loads(i.value_json) for i in record.run.config.update}
    assert config["agent"] == "imitation" and config["n_rounds"] == 2 and config["budget"] == 6
    for key in ("losses/ranking_loss", "charts/oracle_agreement", "charts/SPS",
                "eval/learned/aulc", "eval/margin/aulc"):  # fmt: skip
        assert np.isfinite(history[key]), key
    logged = json.loads((out / train_mod.METRICS_FILE).read_text().splitlines()[-1])
    assert history["eval/learned/aulc"] == logged["eval/learned/aulc"]

    # killed after its first round, then resumed: the same runner and policy, bit for bit
    quiet = {"wandb_mode": "disabled", "progress": False}
    assert train_mod.train(settings, tmp_path / "killed", stop_after_chunks=1, **quiet) is None
    resumed = train_mod.train(None, tmp_path / "killed", resume=True, **quiet)
    for x, y in zip(runner_leaves(out), runner_leaves(tmp_path / "killed"), strict=True):
        np.testing.assert_array_equal(x, y)
    again = LearnedStrategy.load(resumed)
    for x, y in zip(jax.tree.leaves(policy.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_resumed_run_logs_to_the_same_wandb_run_grouped_tagged_with_its_policy(tmp_path):
    from test_evaluate import wandb_run_of

    settings = tiny("ppo", eval_tasks=0)  # 4 updates of 16 env steps, chunks of 2 updates
    out = tmp_path / "run"
    stopped = train_mod.train(
        settings, out, wandb_mode="offline", progress=False, stop_after_chunks=1,
        wandb_group="ablation-7", preset="tiny",
    )  # fmt: skip
    assert stopped is None
    saved = json.loads((out / train_mod.WANDB_FILE).read_text())
    assert saved["group"] == "ablation-7"
    # resumed from the command line, without --wandb-group: the saved run and group go on
    assert train_mod.main(parse("--resume", str(out), "--quiet", "--wandb-mode", "offline")) == 0
    files = sorted(glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 2  # one offline record per process, both of one W&B run
    # the two records in the order they were written: by their first logged step (the
    # folder names hold the start second only, and both runs may start in the same one)
    records = sorted((wandb_run_of(Path(f)) for f in files), key=lambda r: min(r[2]))
    (first, config, history1, art1), (second, _, history2, art2) = records
    assert first.run_id == second.run_id == saved["id"] != ""
    assert second.resume and not first.resume
    for run in (first, second):
        assert run.run_group == "ablation-7" and run.job_type == "train"
        assert list(run.tags) == ["agent:ppo", "suite:synthetic:2", "preset:tiny"]
    assert config["wandb_group"] == "ablation-7" and config["resumed_at_update"] == 0
    # chunk 1 in the first process, chunk 2 in the resumed one
    assert sorted(history1) == [32] and sorted(history2) == [64]
    logged = [json.loads(x) for x in (out / train_mod.METRICS_FILE).read_text().splitlines()]
    lr = settings.config.lr
    for row, line, updates_done in ((history1[32], logged[0], 2), (history2[64], logged[1], 4)):
        # the step size of the chunk's last update (updates_done - 1 done before it)
        assert row["charts/learning_rate"] == pytest.approx(lr * (1 - (updates_done - 1) / 4))
        assert row["charts/learning_rate"] == line["charts/learning_rate"]
        assert row["losses/explained_variance"] == line["losses/explained_variance"]
        assert np.isfinite(line["losses/explained_variance"])
        assert line["losses/explained_variance"] <= 1
    assert art1 == []
    (artifact,) = art2
    assert artifact.type == "policy" and artifact.name == f"policy-{saved['id']}"
    (entry,) = artifact.manifest.contents
    assert entry.path == "policy" and entry.size == (out / "policy").stat().st_size


def test_wandb_group_flag_reaches_the_run_and_defaults_to_the_folder_name(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_mod, "train", lambda *a, **kw: calls.append(kw) or "policy")
    out = tmp_path / "run"
    argv = ("--preset", "tiny", "--out", str(out), "--quiet", "--wandb-mode", "disabled")
    assert train_mod.main(parse(*argv, "--wandb-group", "sweep-3")) == 0
    assert calls[-1]["wandb_group"] == "sweep-3" and calls[-1]["preset"] == "tiny"
    assert train_mod.main(parse(*argv)) == 0
    assert calls[-1]["wandb_group"] is None  # train() then uses the run folder's name


@pytest.mark.parametrize("given", [None, "demo-group"])
def test_demo_trains_and_evaluates_in_one_wandb_group(tmp_path, monkeypatch, given):
    from metaal.experiments import demo
    from metaal.experiments import evaluate as evaluate_mod

    calls = {}
    monkeypatch.setattr(train_mod, "train", lambda *a, **kw: calls.update(train=kw) or "p")
    monkeypatch.setattr(evaluate_mod, "evaluate", lambda *a, **kw: calls.update(evaluate=kw))
    monkeypatch.setattr(demo, "summary_table", lambda *a, **kw: "")
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    out = tmp_path / "demo_42"
    argv = ["--out", str(out), "--wandb-mode", "offline"]
    assert demo.main(parser.parse_args(argv + (["--wandb-group", given] if given else []))) == 0
    group = given or "demo_42"
    assert calls["train"]["wandb_group"] == calls["evaluate"]["wandb_group"] == group


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_a_vmapped_vote_equals_its_members_alone_and_resumes_a_member_behind_bit_for_bit(
    tmp_path,
):
    settings = tiny("ppo", eval_tasks=0, chunk_updates=1)  # 4 chunks
    quiet = {"wandb_mode": "disabled", "progress": False}
    full = tmp_path / "full"
    vote = LearnedStrategy.load(train_mod.train_members(settings, full, members=2, **quiet))
    assert json.loads((full / train_mod.MEMBERS_FILE).read_text())["member_group"] == 0
    # member 1 (not the first slot) against seed 1 trained alone: vmapped sums round
    # differently (the looped vote below is bit for bit)
    alone_settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, seed=1))
    alone = train_mod.train(alone_settings, tmp_path / "alone1", **quiet)
    for x, y in zip(
        jax.tree.leaves(LearnedStrategy.load(alone).params),
        jax.tree.leaves(vote.params),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(y)[1], np.asarray(x), rtol=1e-4, atol=1e-6)
    # killed after chunk 2 between the two members' saves: seed 1 is a chunk behind
    killed = tmp_path / "killed"
    assert (
        train_mod.train_members(settings, killed, members=2, stop_after_chunks=2, **quiet) is None
    )
    behind = train_mod.member_dir(killed, 1)
    shutil.rmtree(checkpoint.latest(behind))
    ahead = train_mod.member_dir(killed, 0)
    assert [checkpoint.read_meta(checkpoint.latest(d))["updates"] for d in (ahead, behind)] == [
        2,
        1,
    ]
    lines = (behind / train_mod.METRICS_FILE).read_text().splitlines()
    (behind / train_mod.METRICS_FILE).write_text("\n".join(lines[:-1]) + "\n")
    resumed = LearnedStrategy.load(train_mod.train_members(None, killed, resume=True, **quiet))
    for x, y in zip(jax.tree.leaves(vote.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for seed in (0, 1):
        read = [
            json.loads(line)["env_steps"]
            for line in (train_mod.member_dir(killed, seed) / train_mod.METRICS_FILE)
            .read_text()
            .splitlines()
        ]
        want = [
            json.loads(line)["env_steps"]
            for line in (train_mod.member_dir(full, seed) / train_mod.METRICS_FILE)
            .read_text()
            .splitlines()
        ]
        assert read == want  # every chunk logged once


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_a_looped_vote_trains_each_member_bit_for_bit_as_alone(tmp_path):
    settings = tiny("dqn", eval_tasks=0)
    quiet = {"wandb_mode": "disabled", "progress": False}
    out = tmp_path / "looped"
    vote = train_mod.train_members(settings, out, members=2, member_program="map", **quiet)
    assert json.loads((out / train_mod.MEMBERS_FILE).read_text())["member_program"] == "map"
    vote = LearnedStrategy.load(vote)
    for i, seed in enumerate((0, 1)):
        run = dataclasses.replace(settings.run, seed=seed)
        alone = train_mod.train(
            dataclasses.replace(settings, run=run), tmp_path / f"alone{seed}", **quiet
        )
        for x, y in zip(
            jax.tree.leaves(LearnedStrategy.load(alone).params),
            jax.tree.leaves(vote.params),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(y)[i], np.asarray(x))
    with pytest.raises(ValueError, match="--member-program 'scan': choose one of vmap, map"):
        train_mod.train_members(settings, tmp_path / "bad", 2, member_program="scan", **quiet)
