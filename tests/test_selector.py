"""The strategy selector: a policy that chooses among heuristics' picks (issue 16).

A selector whose policy follows one proposer's column must be that heuristic, step for
step, in the env (through `evaluate`) and in the query adapter; the selector columns
have closed forms; DAgger with proposers labels exactly the proposals; bad settings
are refused by name.
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

from metaal.agents import imitation
from metaal.data import Task, make_split, pad_split
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.experiments import evaluate
from metaal.experiments.configs import imitation_recipe
from metaal.experiments.policy_table import bar_verdicts, policy_rows
from metaal.experiments.policy_table import main as policy_table_main
from metaal.policy_net import LINEAR_SCORER, linear_params, linear_scorer, scorer_columns
from metaal.strategies.adapter import QueryStrategy
from metaal.strategies.learned import LearnedStrategy
from metaal.strategies.selector import (
    STEP_COLUMNS,
    STEP_FEATURES,
    balance_gap,
    check_proposers,
    check_step_columns,
    fit_error,
    label_disagreement,
    proposals,
    selector_columns,
    selector_observation,
)

PROPOSERS = ("margin", "coreset", "random")
BUDGET, SEEDS = 12, 3


def follower(name: str, proposers=PROPOSERS) -> LearnedStrategy:
    """A linear selector that always takes heuristic `name`'s pick."""
    config = {"scorer": LINEAR_SCORER, "proposers": list(proposers)}
    params = linear_params({f"proposed_by_{name}": 1.0}, scorer_columns(config))
    return LearnedStrategy(linear_scorer(config), params, config)


@pytest.fixture(scope="module")
def tasks():
    out = []
    for name, loader in (("iris", datasets.load_iris), ("wine", datasets.load_wine)):
        bunch = loader()
        names = tuple(str(c) for c in bunch.target_names)
        out.append(Task(name, bunch.data, bunch.target.astype(np.int32), names, "sklearn"))
    return out


# batch 4 is out of CI's 20 minutes; run with -m slow
@pytest.mark.parametrize("query_batch", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_a_selector_that_follows_one_proposer_is_that_heuristic(tasks, query_batch):
    # in rounds of 4 (one refit a round) too: the proposers see the round's earlier picks as
    # the heuristics themselves do, so a follower stays its heuristic pick for pick
    followers = [follower(n).to_strategy(f"follows_{n}") for n in ("margin", "coreset", "random")]
    kwargs = dict(seeds=SEEDS, budget=BUDGET, n_initial=3, out_dir=None, progress=False)
    kwargs["query_batch"] = query_batch
    results = evaluate.evaluate(tasks, [*followers, "margin", "coreset"], **kwargs)
    curves = results.pivot_table(
        index=["dataset", "seed", "step"], columns="strategy", values="test_accuracy"
    )
    assert len(curves) == len(tasks) * SEEDS * (BUDGET + 1)
    np.testing.assert_array_equal(curves["follows_margin"], curves["margin"])
    np.testing.assert_array_equal(curves["follows_coreset"], curves["coreset"])
    # and another proposer's follower chooses differently somewhere
    assert (curves["follows_random"] != curves["margin"]).any()
    assert (curves["follows_coreset"] != curves["margin"]).any()


def test_the_query_adapter_runs_a_selector_like_its_heuristic(tasks):
    X, y = tasks[1].X, tasks[1].y.astype(float)
    y[np.random.default_rng(0).permutation(len(y))[20:]] = np.nan
    picks = QueryStrategy(follower("margin").to_strategy(), random_state=0).query(X, y)
    margin = QueryStrategy("margin", random_state=0).query(X, y)
    np.testing.assert_array_equal(picks, margin)


def test_selector_columns_have_their_closed_forms(tasks):
    config = EnvConfig(budget=4, n_initial=3, n_candidates=None)
    env = ActiveLearningEnv(config)
    split = make_split(tasks[0], 0)
    params = make_params(pad_split(split))
    obs, state = env.reset(jax.random.key(1), params)
    ctx = env.context(state, params)
    names = ("margin", "entropy", "least_confidence", "coreset")
    picked = np.asarray(proposals(names, jax.random.key(2), obs, ctx))
    seen = selector_observation(names, jax.random.key(2), obs, ctx)
    assert seen.features[-len(selector_columns(names)) :] == selector_columns(names)
    margin = np.asarray(obs.column("margin"))
    mask = np.asarray(obs.action_mask)
    assert np.argmax(picked[0]) == np.argmin(np.where(mask, margin, np.inf))
    assert np.argmax(picked[3]) == np.argmax(np.where(mask, np.asarray(ctx.dist_labeled), -1))
    assert picked.sum(axis=1).tolist() == [1, 1, 1, 1]
    np.testing.assert_array_equal(np.asarray(seen.action_mask), picked.any(axis=0))
    rows = np.asarray(seen.candidates)[np.asarray(seen.action_mask)]
    n_distinct = picked.any(axis=0).sum()
    np.testing.assert_allclose(rows[:, seen.features.index("distinct_picks")], n_distinct / 4)
    np.testing.assert_allclose(
        rows[:, seen.features.index("n_proposed")], picked.sum(0)[picked.any(0)] / 4
    )
    # balance gap: total variation of labelled shares against mean predicted unlabelled shares
    labels = np.asarray(params.task.pool_y)[np.asarray(state.labeled)]
    seen_share = np.bincount(labels, minlength=3) / len(labels)
    unl = np.asarray(params.task.pool_mask & ~state.labeled)
    predicted = np.asarray(ctx.pool_probs)[unl].mean(axis=0)
    gap = 0.5 * np.abs(seen_share - predicted[:3]).sum()
    np.testing.assert_allclose(float(balance_gap(ctx)), gap, rtol=1e-5)
    np.testing.assert_allclose(rows[:, seen.features.index("balance_gap")], gap, rtol=1e-5)


def test_the_noise_step_columns_match_numpy_and_scikit_learn(tasks):
    from sklearn.neighbors import NearestNeighbors

    env = ActiveLearningEnv(EnvConfig(budget=6, n_initial=12, n_candidates=None))
    params = make_params(pad_split(make_split(tasks[1], 0)))  # wine: no duplicate rows
    obs, state = env.reset(jax.random.key(4), params)
    for t in range(3):  # a few margin picks, so the labelled set is not only the initial one
        pick = int(np.argmin(np.where(obs.action_mask, obs.column("margin"), np.inf)))
        obs, state, *_ = env.step(jax.random.key(10 + t), state, pick, params)
    ctx = env.context(state, params)
    labeled = np.flatnonzero(np.asarray(state.labeled & params.task.pool_mask))
    assert len(labeled) == 15
    y = np.asarray(params.task.pool_y)[labeled]
    predicted = np.asarray(ctx.pool_probs)[labeled, :3].argmax(axis=1)
    np.testing.assert_allclose(float(fit_error(ctx)), np.mean(predicted != y), rtol=1e-6)
    X = np.asarray(params.task.pool_X)[labeled]
    _, nearest = NearestNeighbors(n_neighbors=2).fit(X).kneighbors(X)
    assert np.all(nearest[:, 0] == np.arange(len(labeled)))  # no ties with another row
    expected = np.mean(y[nearest[:, 1]] != y)
    assert 0 < expected < 1  # a value that can be wrong both ways
    np.testing.assert_allclose(float(label_disagreement(ctx)), expected, rtol=1e-6)
    # the columns carry them on every proposal, in the order asked
    state_columns = ("fit_error", "label_disagreement", "distinct_picks")
    seen = selector_observation(PROPOSERS, jax.random.key(2), obs, ctx, state_columns)
    assert seen.features[-3:] == state_columns
    rows = np.asarray(seen.candidates)[np.asarray(seen.action_mask)]
    np.testing.assert_allclose(rows[:, -3], np.mean(predicted != y), rtol=1e-6)
    np.testing.assert_allclose(rows[:, -2], expected, rtol=1e-6)


def test_step_columns_are_recorded_and_a_file_without_them_reads_the_default(tasks):
    from metaal.experiments.train import export_config

    assert STEP_COLUMNS == ("distinct_picks", "balance_gap")
    assert set(STEP_COLUMNS) < set(STEP_FEATURES)
    legacy = {"features": ["margin"], "proposers": list(PROPOSERS)}
    assert scorer_columns(legacy)[-2:] == STEP_COLUMNS
    settings = imitation_recipe("sel_mbr_a05_fit")
    exported = export_config(settings, env_steps=0, command="test")
    assert exported["selector_state"] == [*STEP_COLUMNS, "fit_error", "label_disagreement"]
    assert scorer_columns(exported)[-4:] == tuple(exported["selector_state"])
    assert len(scorer_columns(exported)) == imitation.n_columns(settings.config)
    with pytest.raises(ValueError, match="unknown; choose among"):
        check_step_columns(("fit_error", "val_trend"))
    with pytest.raises(ValueError, match="distinct"):
        check_step_columns(("fit_error", "fit_error"))
    with pytest.raises(ValueError, match="step columns"):
        imitation_recipe("sel_mbr_a05").config.replace(selector_state=("nope",))


def test_the_selector_oracle_queries_the_pick_whose_step_gains_most(tasks):
    from metaal.experiments.selector_headroom import selector_oracle

    env = ActiveLearningEnv(EnvConfig(budget=6, n_initial=6, n_candidates=None))
    params = make_params(pad_split(make_split(tasks[1], 0)))
    oracle = selector_oracle(PROPOSERS)
    assert oracle.name == "oracle_margin_coreset_random" and not oracle.deployable
    obs, state = env.reset(jax.random.key(4), params)
    distinct = []
    for t in range(3):
        key = jax.random.key(20 + t)
        ctx = env.context(state, params)
        scores, _ = oracle.score(key, obs, ctx, ())
        picks = np.argmax(np.asarray(proposals(PROPOSERS, key, obs, ctx)), axis=1)
        # each pick's reward when the env really takes it: the look-ahead is that step's gain
        rewards = [float(env.step(key, state, int(j), params)[2]) for j in picks]
        distinct.append(len(set(picks.tolist())))
        np.testing.assert_allclose(np.asarray(scores)[picks], rewards, atol=1e-6)
        finite = np.isfinite(np.asarray(scores))
        assert set(np.flatnonzero(finite)) == set(picks.tolist())
        choice = int(np.argmax(np.where(finite, scores, -np.inf)))
        obs, state, reward, *_ = env.step(key, state, choice, params)
        assert float(reward) == pytest.approx(max(rewards), abs=1e-6)
    assert max(distinct) > 1  # the proposers disagreed, so there was a choice to make


def test_the_selector_oracle_with_a_shortlist_adds_margins_most_uncertain(tasks):
    from metaal.experiments.selector_headroom import selector_oracle
    from metaal.features import uncertainty

    env = ActiveLearningEnv(EnvConfig(budget=6, n_initial=6, n_candidates=None))
    params = make_params(pad_split(make_split(tasks[1], 0)))
    oracle = selector_oracle(("coreset", "random"), shortlist=4)
    assert oracle.name == "oracle_coreset_random_top4"
    assert selector_oracle((), shortlist=16).name == "oracle_top16"
    obs, state = env.reset(jax.random.key(4), params)
    key = jax.random.key(21)
    ctx = env.context(state, params)
    scores = np.asarray(oracle.score(key, obs, ctx, ())[0])
    margin = np.asarray(uncertainty(ctx.cand_probs, ctx.class_mask)["margin"])
    top = np.argsort(np.where(np.asarray(obs.action_mask), margin, np.inf))[:4]
    picks = np.argmax(np.asarray(proposals(("coreset", "random"), key, obs, ctx)), axis=1)
    finite = np.flatnonzero(np.isfinite(scores))
    assert set(finite.tolist()) == {*top.tolist(), *picks.tolist()}
    assert len(finite) > 4  # a pick outside margin's four, or the test shows nothing
    rewards = [float(env.step(key, state, int(j), params)[2]) for j in finite]
    np.testing.assert_allclose(scores[finite], rewards, atol=1e-6)
    with pytest.raises(ValueError, match="shortlist must be >= 0"):
        selector_oracle(("coreset", "random"), shortlist=-1)
    with pytest.raises(ValueError, match="proposers, a shortlist, or both"):
        selector_oracle(())


def test_dagger_with_proposers_labels_exactly_the_proposals():
    settings = imitation_recipe("sel_big")
    assert settings.config.proposers == (
        "margin",
        "entropy",
        "badge",
        "coreset",
        "density",
        "random",
    )
    config = imitation.ImitationConfig(
        env=EnvConfig(budget=5, n_initial=3, n_candidates=None),
        proposers=PROPOSERS,
        n_labels=3,
        n_policy_labels=3,
        shortlist=0,
        n_envs=2,
        n_rounds=1,
        updates_per_round=2,
        batch_size=4,
        hidden=(8,),
        state_hidden=8,
    )
    bunch = datasets.load_wine()
    task = Task("wine", bunch.data, bunch.target.astype(np.int32), ("a", "b", "c"), "sklearn")
    params = make_params(pad_split(make_split(task, 0)))
    scorer = imitation.make_scorer(config)
    net = scorer.init(jax.random.key(0))
    episode = imitation.make_episode(config, scorer)
    samples, _ = jax.jit(episode)(jax.random.key(3), net, params, 0)
    env_features = list(ActiveLearningEnv(config.env).features)
    names = scorer_columns({"features": env_features, "proposers": PROPOSERS})
    assert samples.candidates.shape[-1] == len(names)
    col = {n: i for i, n in enumerate(names)}
    real = np.asarray(samples.mask)
    proposed = np.asarray(samples.candidates)[..., col["n_proposed"]]
    # every labelled candidate was proposed, and every state labels 1..3 distinct proposals
    assert np.all(proposed[real] > 0) and np.all(real.sum(axis=1) >= 1)
    who = np.asarray(samples.candidates)[..., [col[f"proposed_by_{n}"] for n in PROPOSERS]]
    assert np.all(who[real].sum(axis=1) >= 1)
    np.testing.assert_allclose(who[real].sum(axis=1) / 3, proposed[real], rtol=1e-6)


def test_bad_proposers_and_a_shortlisted_selector_are_refused():
    with pytest.raises(ValueError, match="stateless deployable heuristic"):
        check_proposers(("margin", "typiclust"))
    with pytest.raises(ValueError, match="at least two proposers"):
        check_proposers(("margin",))
    with pytest.raises(ValueError, match="distinct"):
        check_proposers(("margin", "margin"))
    with pytest.raises(ValueError, match="n_labels = n_policy_labels = 3"):
        imitation.ImitationConfig(proposers=PROPOSERS, shortlist=0, n_labels=16)
    with pytest.raises(ValueError, match="set shortlist 0"):
        imitation.ImitationConfig(proposers=PROPOSERS, n_labels=3, n_policy_labels=3)
    with pytest.raises(ValueError, match="does not apply"):
        follower("margin").with_shortlist(16)
    a = follower("margin")
    b = follower("margin", ("margin", "entropy"))
    with pytest.raises(ValueError, match="proposers"):
        LearnedStrategy.ensemble([a, b])


def test_a_selector_vote_survives_a_file(tmp_path, tasks):
    vote = LearnedStrategy.ensemble([follower("margin"), follower("coreset")])
    back = LearnedStrategy.load(vote.save(tmp_path / "vote"))
    assert back.config["proposers"] == list(PROPOSERS)
    assert "proposers=margin,coreset,random" in repr(back)
    env = ActiveLearningEnv(EnvConfig(budget=4, n_initial=3, n_candidates=None))
    params = make_params(pad_split(make_split(tasks[1], 1)))
    obs, state = env.reset(jax.random.key(0), params)
    ctx = env.context(state, params)
    key = jax.random.key(4)
    scores = [np.asarray(p.to_strategy().score(key, obs, ctx, p.params)[0]) for p in (vote, back)]
    np.testing.assert_array_equal(scores[0], scores[1])
    # two proposals score (margin's and core-set's picks, distinct here), each +1 once
    picked = np.asarray(proposals(PROPOSERS, key, obs, ctx))
    assert picked[0].argmax() != picked[1].argmax()
    assert np.sum(scores[0] > -1e8) == picked.any(axis=0).sum()


def _curves(strategy: str, offset: float, datasets=("a", "b", "c"), seeds=8, steps=4):
    rng = np.random.default_rng(0)  # the same draws for every strategy: paired seeds
    rows = []
    for d in datasets:
        for s in range(seeds):
            base = rng.uniform(0.5, 0.7)
            for t in range(steps + 1):
                acc = base + 0.01 * t + offset
                rows.append((d, strategy, s, t, 5 + t, acc))
    columns = ["dataset", "strategy", "seed", "step", "n_labeled", "test_accuracy"]
    return pd.DataFrame(rows, columns=columns)


def test_the_policy_table_ranks_each_policy_alone_and_measures_the_gap():
    heuristics = pd.concat([_curves("margin", 0.0), _curves("badge", -0.01)])
    better = _curves("sel", 0.004)
    worse = _curves("bad", -0.02)
    oracle = _curves("oracle", 0.02)
    table = policy_rows(heuristics, [better, worse], oracle).set_index("policy")
    # heuristics' extra seeds (here: margin far ahead on seeds 8..15) do not enter the pairing
    extra = _curves("margin", 0.5, seeds=16)
    more = pd.concat([heuristics, extra[extra["seed"] >= 8]])
    pd.testing.assert_frame_equal(
        policy_rows(more, [better, worse], oracle).set_index("policy"), table
    )
    assert table.loc["sel", "mean rank"] == 1.0 and table.loc["sel", "margin's rank"] == 2.0
    assert table.loc["bad", "mean rank"] == 3.0 and table.loc["bad", "best heuristic"] == "margin"
    np.testing.assert_allclose(table.loc["sel", "AULC - margin"], 0.004, atol=1e-12)
    np.testing.assert_allclose(table.loc["sel", "AULC - badge"], 0.014, atol=1e-12)
    np.testing.assert_allclose(table.loc["bad", "AULC - badge"], -0.01, atol=1e-12)
    np.testing.assert_allclose(table.loc["sel", "gap closed"], 0.004 / 0.02, rtol=1e-9)
    # every seed gains: significant on each of the 3 data sets (Wilcoxon, 8 seeds)
    assert table.loc["sel", "W/T/L vs margin"] == "3/0/0"
    assert table.loc["bad", "W/T/L vs badge"] == "0/0/3"
    assert table.loc["sel", "above margin"] == "3/3"
    with pytest.raises(ValueError, match="one strategy"):
        policy_rows(heuristics, [pd.concat([better, worse])])
    # a policy validated on a fold of the data sets is ranked on that fold only: data set
    # "d", where margin is far behind, does not enter its row
    wider = pd.concat([heuristics, _curves("margin", -0.5, datasets=("d",))])
    fold = better[better["dataset"] != "c"]
    row = policy_rows(wider, [fold]).set_index("policy").loc["sel"]
    assert row["W/T/L vs margin"] == "2/0/0" and row["above margin"] == "2/2"
    np.testing.assert_allclose(row["AULC - margin"], 0.004, atol=1e-12)
    with pytest.raises(ValueError, match="data sets the heuristics' run lacks: e"):
        policy_rows(heuristics, [_curves("sel", 0.0, datasets=("a", "e"))])


def test_the_bar_passes_a_policy_above_every_named_heuristic_and_its_parent(tmp_path):
    heuristics = pd.concat([_curves("margin", 0.0), _curves("eer", 0.003)])
    draws = [_curves("learned", 0.004), _curves("learned", 0.002)]
    parents = [_curves("learned", 0.001), _curves("learned", 0.001)]
    table = policy_rows(heuristics, draws, opponents=("margin", "eer"))
    gate = bar_verdicts(table, draws, ("margin", "eer"), parents)
    np.testing.assert_allclose(gate["AULC - eer"], [0.001, -0.001], atol=1e-12)
    np.testing.assert_allclose(gate["AULC - parent"], [0.003, 0.001], atol=1e-12)
    assert gate["passes"].tolist() == [True, False]  # the second is below eer
    with pytest.raises(ValueError, match="one per --policy"):
        bar_verdicts(table, draws, ("margin",), parents[:1])
    with pytest.raises(ValueError, match="not run on every data set and seed"):
        short = parents[0][parents[0]["seed"] < 4]
        bar_verdicts(table, draws, ("margin",), [short, parents[1]])
    # the command: exit status 0 when every draw passes, 1 when one fails
    folders = {}
    for name, frame in [("h", heuristics), ("d0", draws[0]), ("d1", draws[1]), ("p0", parents[0])]:
        folders[name] = tmp_path / name
        folders[name].mkdir()
        frame.to_csv(folders[name] / "results.csv", index=False)
    argv = ["--heuristics", str(folders["h"]), "--opponents", "margin,eer", "--bar", "margin,eer"]
    one = [*argv, "--policy", str(folders["d0"]), "--parent", str(folders["p0"])]
    assert policy_table_main(one) == 0
    assert (
        policy_table_main([*one, "--policy", str(folders["d1"]), "--parent", str(folders["p0"])])
        == 1
    )
    with pytest.raises(SystemExit, match="--bar"):
        policy_table_main([*argv[:4], "--bar", "entropy", "--policy", str(folders["d0"])])


def test_a_policy_without_proposers_reads_only_its_trained_columns():
    config = {"scorer": LINEAR_SCORER, "features": ["margin", "density"]}
    assert scorer_columns(config) == ("margin", "density")
    assert selector_columns(()) == ()
    assert scorer_columns({**config, "proposers": ["margin", "random"]})[2:] == (
        "proposed_by_margin",
        "proposed_by_random",
        "n_proposed",
        "distinct_picks",
        "balance_gap",
    )


def _anchor_samples(config, gains, mask, anchor_row):
    """Samples of 2 states x 3 labelled proposals whose row `anchor_row` is margin's pick."""
    n, L = gains.shape
    cand = np.zeros((n, L, imitation.n_columns(config)), np.float32)
    cand[:, anchor_row, imitation.anchor_column(config)] = 1.0
    return imitation.Samples(
        state=np.zeros((n, 4), np.float32),
        candidates=cand,
        mask=mask,
        gains=gains.astype(np.float32),
        index=np.zeros((n, L), np.int32),
        scale=np.full((n,), 0.01, np.float32),
    )


def test_the_anchor_bonus_moves_the_listwise_target_toward_the_first_proposers_pick():
    fields = dict(proposers=PROPOSERS, n_labels=3, n_policy_labels=3, shortlist=0)
    config = imitation.ImitationConfig(**fields, anchor_bonus=0.5, temperature=0.5)
    assert imitation.anchor_column(config) == len(ActiveLearningEnv(config.env).features)
    # state 0: three distinct gains; state 1: all gains equal (weight 0, so no bonus either)
    gains = np.array([[0.02, 0.0, -0.01], [0.01, 0.01, 0.01]])
    mask = np.ones((2, 3), bool)
    samples = _anchor_samples(config, gains, mask, anchor_row=1)
    scores = np.array([[0.3, -0.2, 0.1], [1.0, 0.0, 0.0]], np.float32)
    loss = float(imitation.ranking_loss(scores, samples, config))
    # closed form: episode targets (gains - their state mean) / 0.01, the anchor + 0.5
    t = (gains[0] - gains[0].mean()) / 0.01
    t[1] += 0.5
    target = np.exp(t / 0.5) / np.exp(t / 0.5).sum()
    logq = scores[0] - np.log(np.exp(scores[0]).sum())
    np.testing.assert_allclose(loss, -(target * logq).sum(), rtol=1e-5)
    without = imitation.ImitationConfig(**fields, temperature=0.5)
    t0 = (gains[0] - gains[0].mean()) / 0.01
    target0 = np.exp(t0 / 0.5) / np.exp(t0 / 0.5).sum()
    loss0 = float(imitation.ranking_loss(scores, samples, without))
    np.testing.assert_allclose(loss0, -(target0 * logq).sum(), rtol=1e-5)
    # the bonus makes scoring margin's pick higher pay off more than without it
    up = scores.copy()
    up[0, 1] += 1.0
    gain_with = loss - float(imitation.ranking_loss(up, samples, config))
    gain_without = loss0 - float(imitation.ranking_loss(up, samples, without))
    assert gain_with > gain_without + 0.01


def test_an_anchor_bonus_needs_proposers_and_is_not_negative():
    with pytest.raises(ValueError, match="anchor_bonus .* set proposers"):
        imitation.ImitationConfig(anchor_bonus=0.5)
    with pytest.raises(ValueError, match="anchor_bonus must be >= 0"):
        imitation.ImitationConfig(
            proposers=PROPOSERS, n_labels=3, n_policy_labels=3, shortlist=0, anchor_bonus=-1.0
        )
    with pytest.raises(ValueError, match="names no proposers"):
        imitation.anchor_column(imitation.ImitationConfig())
    assert imitation_recipe("sel_big_a1").config.anchor_bonus == 1.0
    small = imitation_recipe("sel_mbr_a05").config
    assert small.proposers == ("margin", "badge", "random") and small.anchor_bonus == 0.5
    assert small.n_labels == small.n_policy_labels == 3  # DAgger labels every proposal
