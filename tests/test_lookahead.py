"""Look-ahead strategies (eer, emoc): their statistics against an explicit loop of refits.

The reference builds each look-ahead's labelled set with numpy (the labelled
rows in order plus the candidate, no padding), refits the env's learner once
per candidate and label, and computes the pool statistics in numpy. The
strategies' vectorised code pads the labelled set, vmaps over candidates and
labels and weights them; padding rows of weight 0 must not change a fit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaal import features
from metaal.agents import imitation
from metaal.agents.imitation import ImitationConfig
from metaal.data import load_task, make_split, pad_split
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.experiments.configs import imitation_recipe
from metaal.experiments.evaluate import evaluate
from metaal.policy_net import LINEAR_SCORER, linear_params, linear_scorer, scorer_columns
from metaal.strategies import get_strategy, select
from metaal.strategies.adapter import QueryStrategy
from metaal.strategies.learned import LearnedStrategy
from metaal.strategies.lookahead import (
    EXTRA_STATS,
    LOOKAHEAD_COLUMNS,
    SHORTLIST,
    STATS,
    lookahead_columns,
    lookahead_observation,
    lookahead_stats,
    margin_shortlist,
)


def reference_stats(env, state, params, rows, believed=0, extra=False):
    """Expected (change, error, entropy) of labelling candidates `rows`, by explicit refits.

    The last `believed` labelled rows count with the learner's predicted label.
    With `extra`, the columns are `STATS + EXTRA_STATS`: the spreads are max - min
    over the two labels, `flip` the share of unlabelled rows whose argmax changes,
    `fit_error` the labelled rows' mean 1 - p(label) after the refit.
    """
    task = params.task
    fit, predict = jax.jit(env.learner_step.fit), jax.jit(env.learner_step.predict_proba)
    pool_X = np.asarray(task.pool_X)
    class_mask = task.class_mask
    n_lab = int(state.n_labeled)
    order = np.asarray(state.labeled_idx)[:n_lab]
    probs = np.asarray(env.learner_step.predict_proba(state.learner, task.pool_X, class_mask))
    y_lab = np.asarray(task.pool_y)[order].copy()
    if believed:
        y_lab[-believed:] = probs[order[-believed:]].argmax(axis=1)
    unlabeled = np.asarray(task.pool_mask) & ~np.asarray(state.labeled)
    k_real = int(np.sum(class_mask))
    out = []
    for r in rows:
        i = int(state.candidates[r])
        p = probs[i][:k_real]
        labels = np.argsort(-p, kind="stable")[:2]
        weights = p[labels] / p[labels].sum()
        per_label = []
        for label in labels:
            X = np.concatenate([pool_X[order], pool_X[i : i + 1]])
            y = np.concatenate([y_lab, [label]]).astype(np.int32)
            fitted = fit(
                state.learner, jnp.asarray(X), jnp.asarray(y), jnp.ones(len(y)), class_mask
            )
            after = np.asarray(predict(fitted, task.pool_X, class_mask))
            after_u, before_u = after[unlabeled][:, :k_real], probs[unlabeled][:, :k_real]
            logs = np.log(np.maximum(after_u, 1e-12))
            entropy = -np.sum(np.where(after_u > 0, after_u * logs, 0.0), axis=1)
            fitted_lab = np.asarray(predict(fitted, jnp.asarray(pool_X[order]), class_mask))
            per_label.append(
                [
                    np.abs(after_u - before_u).sum(axis=1).mean(),
                    (1.0 - after_u.max(axis=1)).mean(),
                    (entropy / np.log(k_real)).mean(),
                    (after_u.argmax(axis=1) != before_u.argmax(axis=1)).mean(),
                    (1.0 - fitted_lab[np.arange(n_lab), y_lab]).mean(),
                ]
            )
        per_label = np.array(per_label)
        mean = weights @ per_label
        if not extra:
            out.append(mean[:3])
            continue
        spread = per_label.max(axis=0) - per_label.min(axis=0)
        out.append([*mean[:3], spread[1], spread[0], mean[3], mean[4]])
    return np.array(out)


def run_steps(env, params, n_steps, seed=0):
    """Reset and take `n_steps` margin picks; returns the state."""
    _, state = env.reset(jax.random.key(seed), params)
    for t in range(n_steps):
        margin = features.uncertainty(
            env.learner_step.predict_proba(
                state.learner, params.task.pool_X[state.candidates], params.task.class_mask
            ),
            params.task.class_mask,
        )["margin"]
        action = jnp.argmin(jnp.where(state.candidate_mask, margin, jnp.inf))
        _, state, *_ = env.step(jax.random.key(100 + t), state, action, params)
    return state


@pytest.fixture(scope="module")
def vowel():
    """keel/vowel (11 classes), a split padded to wider shapes than it needs."""
    split = make_split(load_task("keel/vowel"), 0, max_pool=200, max_val=60, max_test=60)
    padded = pad_split(split, pool=230, features=16, classes=13)
    return make_params(padded)


@pytest.mark.parametrize("query_batch", [1, 3])
def test_lookahead_stats_equal_explicit_refits(vowel, query_batch):
    """eer's and emoc's three statistics, and all seven a policy may read, by explicit refits."""
    env = ActiveLearningEnv(
        EnvConfig(budget=10, n_initial=6, n_candidates=24, query_batch=query_batch)
    )
    # with rounds of 3, four picks leave one pick of the current round unrefitted
    state = run_steps(env, vowel, 4)
    ctx = env.context(state, vowel)
    rows = jnp.arange(6)
    want = reference_stats(env, state, vowel, range(6), believed=4 % query_batch, extra=True)
    base = np.asarray(jax.jit(lookahead_stats)(ctx, rows))
    assert np.all(np.ptp(want[:, :3], axis=0) > 1e-4)  # the candidates differ: the check has teeth
    np.testing.assert_allclose(base, want[:, :3], rtol=2e-4, atol=2e-6)
    names = (*STATS, *EXTRA_STATS)
    got = np.asarray(jax.jit(lookahead_stats, static_argnames="stats")(ctx, rows, stats=names))
    assert got.shape == (6, 7)
    # every extra column varies across the candidates: the check has teeth
    assert np.all(np.ptp(want[:, 3:], axis=0) > 1e-4)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)
    # the first three are eer's and emoc's statistics (another program: equal up to rounding)
    np.testing.assert_allclose(got[:, :3], base, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "names", [("error", "change", "entropy"), (*STATS, "flip", "flip"), (*STATS, "margin")]
)
def test_lookahead_stats_refuse_unknown_or_reordered_names(names):
    with pytest.raises(ValueError, match="look-ahead statistics"):
        lookahead_columns(names)


def test_eer_and_emoc_pick_the_best_of_margins_shortlist(vowel):
    env = ActiveLearningEnv(EnvConfig(budget=10, n_initial=6, n_candidates=None))
    state = run_steps(env, vowel, 2, seed=1)
    ctx = env.context(state, vowel)
    obs = env.observe(state, vowel)
    shortlist = np.asarray(margin_shortlist(ctx, obs.action_mask))
    assert len(shortlist) == SHORTLIST
    margin = np.asarray(features.uncertainty(ctx.cand_probs, ctx.class_mask)["margin"])
    selectable = np.asarray(obs.action_mask)
    # the shortlist is the 16 selectable candidates of smallest margin
    assert set(shortlist) == set(np.argsort(np.where(selectable, margin, np.inf))[:SHORTLIST])
    want = reference_stats(env, state, vowel, shortlist)
    for name, best in (
        ("eer", shortlist[np.argmin(want[:, 1])]),
        ("emoc", shortlist[np.argmax(want[:, 0])]),
    ):
        strategy = get_strategy(name)
        scores, _ = jax.jit(strategy.score)(jax.random.key(0), obs, ctx, ())
        assert int(select(scores, obs.action_mask, jax.random.key(1))) == best
        # outside the shortlist, margin's order, below every shortlisted candidate
        scores = np.asarray(scores)
        outside = np.setdiff1d(np.nonzero(selectable)[0], shortlist)
        assert scores[outside].max() < scores[shortlist].min()
        order = outside[np.argsort(-scores[outside], kind="stable")]
        assert np.all(np.diff(margin[order]) >= 0)


def test_lookahead_needs_our_learner():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.full(40, np.nan)
    y[:4] = [0, 1, 0, 1]
    picks = QueryStrategy("eer", budget=5).query(X, y)
    assert np.isnan(y[picks[0]])
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(ValueError, match="look-ahead strategies .* run them without clf"):
        QueryStrategy("emoc", budget=5).query(X, y, clf=LogisticRegression())


def la_error_follower() -> LearnedStrategy:
    """A hand-made look-ahead policy: the lowest expected pool error among margin's shortlist."""
    config = {"scorer": LINEAR_SCORER, "features": ["margin"], "lookahead": SHORTLIST}
    params = linear_params({"la_error": -1.0}, scorer_columns(config))
    return LearnedStrategy(linear_scorer(config), params, config)


def test_a_lookahead_policy_on_la_error_is_eer_in_the_env_and_the_adapter():
    policy = la_error_follower()
    results = evaluate(
        ["synthetic/3"],
        ["eer"],
        seeds=[0, 1],
        budget=6,
        policy=policy,
        out_dir=None,
        progress=False,
    )
    curves = results.pivot_table(index=["seed", "step"], columns="strategy", values="test_accuracy")
    np.testing.assert_array_equal(curves["learned"], curves["eer"])
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 1.5])
    y = np.full(120, np.nan)
    y[[0, 1, 60, 61]] = [0, 0, 1, 1]
    picks = policy.query(X, y, batch_size=3)
    assert list(picks) == list(QueryStrategy("eer").query(X, y, batch_size=3))


def test_lookahead_columns_and_refusals(vowel):
    env = ActiveLearningEnv(EnvConfig(budget=10, n_initial=6, n_candidates=None))
    state = run_steps(env, vowel, 1)
    obs, ctx = env.observe(state, vowel), env.context(state, vowel)
    seen = jax.jit(lookahead_observation)(obs, ctx)
    rows = np.asarray(margin_shortlist(ctx, obs.action_mask))
    extra = np.asarray(seen.candidates)[:, -len(LOOKAHEAD_COLUMNS) :]
    stats = reference_stats(env, state, vowel, rows)
    np.testing.assert_allclose(extra[rows, :3], stats, rtol=2e-4, atol=2e-6)
    z = (stats - stats.mean(axis=0)) / stats.std(axis=0)
    np.testing.assert_allclose(extra[rows, 3:], z, rtol=1e-3, atol=1e-3)
    others = np.setdiff1d(np.arange(extra.shape[0]), rows)
    assert not extra[others].any() and not np.asarray(seen.action_mask)[others].any()
    assert seen.features[-len(LOOKAHEAD_COLUMNS) :] == LOOKAHEAD_COLUMNS
    with pytest.raises(ValueError, match="set n_labels = n_policy_labels = 16"):
        ImitationConfig(lookahead=16, shortlist=0, n_labels=8, n_policy_labels=8)
    with pytest.raises(ValueError, match="shortlist 0"):
        ImitationConfig(lookahead=16, shortlist=16)
    with pytest.raises(ValueError, match="does not apply"):
        la_error_follower().with_shortlist(8)


def test_a_policy_reads_the_extra_statistics_it_was_saved_with(vowel):
    """A linear policy on la_fit_error picks the shortlist's lowest fit_error by explicit refits."""
    names = [*STATS, *EXTRA_STATS]
    config = {
        "scorer": LINEAR_SCORER,
        "features": ["margin"],
        "lookahead": SHORTLIST,
        "lookahead_stats": names,
    }
    columns = scorer_columns(config)
    assert columns[1:] == tuple(f"la_{n}" for n in names) + tuple(f"z_la_{n}" for n in names)
    policy = LearnedStrategy(
        linear_scorer(config), linear_params({"la_fit_error": -1.0}, columns), config
    )
    env = ActiveLearningEnv(EnvConfig(budget=10, n_initial=6, n_candidates=None))
    state = run_steps(env, vowel, 2, seed=1)
    obs, ctx = env.observe(state, vowel), env.context(state, vowel)
    shortlist = np.asarray(margin_shortlist(ctx, obs.action_mask))
    want = reference_stats(env, state, vowel, shortlist, extra=True)
    strategy = policy.to_strategy()
    scores, _ = jax.jit(strategy.score)(jax.random.key(0), obs, ctx, strategy.params)
    assert int(np.argmax(np.asarray(scores))) == shortlist[np.argmin(want[:, 6])]
    assert "lookahead_stats=" in repr(policy)
    with pytest.raises(ValueError, match="set lookahead"):
        ImitationConfig(lookahead_stats=(*STATS, "flip"))


def test_the_twelfth_sessions_recipe_changes_only_its_lever():
    """la16_wide_huge_x is la16_wide_huge reading the extra look-ahead statistics."""
    huge, x = imitation_recipe("la16_wide_huge"), imitation_recipe("la16_wide_huge_x")
    assert x.config == huge.config.replace(lookahead_stats=(*STATS, *EXTRA_STATS))
    assert x.data == huge.data and huge.config.lookahead_stats == STATS
    assert imitation.n_columns(x.config) == imitation.n_columns(huge.config) + 2 * len(EXTRA_STATS)


def test_the_ninth_sessions_recipes_change_only_their_lever():
    """la16_wide_teacher changes the expert's labels, la16_wide_huge the DAgger data."""
    wide, teacher = imitation_recipe("la16_wide"), imitation_recipe("la16_wide_teacher")
    assert teacher.config == wide.config.replace(expert_label="teacher")
    assert teacher.data == wide.data and wide.config.expert_label == "true"
    huge = imitation_recipe("la16_wide_huge")
    assert huge.config == wide.config.replace(n_rounds=8, n_envs=64, updates_per_round=800)
    assert huge.data == wide.data


def test_the_tenth_sessions_recipes_change_only_their_lever():
    """la16_wide_huge_teacher and _h3 are la16_wide_huge with another expert, nothing else."""
    huge, both = imitation_recipe("la16_wide_huge"), imitation_recipe("la16_wide_huge_teacher")
    assert both.config == huge.config.replace(expert_label="teacher")
    assert both.data == huge.data and huge.config.expert_label == "true"
    h3 = imitation_recipe("la16_wide_huge_h3")
    assert h3.config == huge.config.replace(expert_horizon=3) and h3.data == huge.data


def test_dagger_on_a_lookahead_policy_labels_its_shortlist(vowel):
    settings = imitation_recipe("la16_big")
    assert settings.config.lookahead == 16 and settings.config.shortlist == 0
    config = ImitationConfig(
        env=EnvConfig(budget=4, n_initial=6, n_candidates=None),
        lookahead=6,
        shortlist=0,
        n_labels=6,
        n_policy_labels=6,
        n_envs=1,
        n_rounds=1,
        hidden=(8,),
        state_hidden=8,
    )
    scorer = imitation.make_scorer(config)
    episode = imitation.make_episode(config, scorer)
    samples, _ = jax.jit(episode)(jax.random.key(3), scorer.init(jax.random.key(0)), vowel, 0)
    names = scorer_columns(
        {"features": list(ActiveLearningEnv(config.env).features), "lookahead": 6}
    )
    assert samples.candidates.shape[-1] == len(names)
    cand = np.asarray(samples.candidates)
    change = cand[..., names.index("la_change")]
    # every labelled candidate of every state carries its look-ahead statistics
    assert np.asarray(samples.mask).all() and np.all(change > 0)
