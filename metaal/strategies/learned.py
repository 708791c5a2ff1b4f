"""Learned query strategies: a pure scoring function of the observation, its parameters and config.

    policy = LearnedStrategy(apply, params, {"scorer": "metaal.policy_net:candidate_scorer", ...})
    policy.save("runs/mine/policy")
    policy = LearnedStrategy.load("runs/mine/policy")
    strategy = policy.to_strategy("learned")      # runs in the env like any heuristic
    picks = policy.query(X, y)                    # scikit-activeml's contract

`apply(params, obs) -> scores` reads only the observation (`obs.state`,
`obs.candidates`, `obs.action_mask`; see `metaal.features`), so a policy
transfers to any task.

A policy file is one msgpack document: `format_version`, the JSON `config`
and the `params` pytree. Functions cannot be stored, so `config["scorer"]`
names a factory `"package.module:function"`; `load` imports it and calls
`factory(config)` to rebuild `apply`. Only factories inside the `metaal`
package are imported: a policy file must not run arbitrary code, and metaal
never imports agent code. `config["probe_size"]`, when present, is the probe size the policy
was trained with (the length of its state vector).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import serialization

from metaal import atomic
from metaal.policy_net import (
    ENSEMBLE_SCORER,
    LINEAR_SCORER,
    NEG_INF,
    SCORER,
    SHORTLISTED_SCORER,
    Apply,
    Params,
    lookahead_of,
    lookahead_stats_of,
    proposers_of,
    resolve_scorer,
    selector_state_of,
    trained_features,
)
from metaal.strategies.base import Strategy
from metaal.strategies.lookahead import STATS, lookahead_picks
from metaal.strategies.selector import selector_picks

FORMAT_VERSION = 1
#: Seed of `LearnedStrategy.query` unless `config["random_state"]` sets another.
DEFAULT_RANDOM_STATE = 0
#: The one file name of a policy: a training run's `RUN/policy`, and the shipped default's.
POLICY_FILE = "policy"
#: The shipped default policy (`LearnedStrategy.load("default")`, `--policy default`).
DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default" / POLICY_FILE


@dataclasses.dataclass
class LearnedStrategy:
    """A learned policy: `apply(params, obs) -> scores`, its `params` and its JSON-able `config`."""

    apply: Apply
    params: Params
    config: dict
    _adapter: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def to_strategy(self, name: str = "learned") -> Strategy:
        """The policy as a `Strategy`; its params travel as the strategy's memory (no constants).

        A selector policy (`config["proposers"]`) first asks its proposers for
        their picks (`metaal.strategies.selector`) and scores only those; a
        look-ahead policy (`config["lookahead"]`: S) scores only margin's S most
        uncertain candidates, with their look-ahead columns
        (`metaal.strategies.lookahead`).
        """
        apply = self.apply
        proposers, state = proposers_of(self.config), selector_state_of(self.config)
        lookahead = lookahead_of(self.config)
        stats = lookahead_stats_of(self.config)

        def score(key, obs, ctx, memory):
            if lookahead:  # only margin's shortlist is scored, with its look-ahead columns
                picks, rows = lookahead_picks(obs, ctx, lookahead, stats)
                scores = jnp.where(picks.action_mask, apply(memory, picks), NEG_INF)
                return jnp.full(obs.action_mask.shape, NEG_INF).at[rows].set(scores), memory
            if not proposers:
                return apply(memory, obs), memory
            # only the picks are scored
            picks, rows = selector_picks(proposers, key, obs, ctx, state)
            scores = jnp.where(picks.action_mask, apply(memory, picks), NEG_INF)
            return jnp.full(obs.action_mask.shape, NEG_INF).at[rows].set(scores), memory

        return Strategy(
            name, "learned", score, params=self.params, features=trained_features(self.config)
        )

    @property
    def learner(self) -> str:
        """The learner spec the policy was trained with (`logreg` if its file does not say)."""
        return str(self.config.get("env", {}).get("learner", "logreg"))

    @property
    def probe_size(self) -> int | None:
        """Probe size of the state vector the policy was trained with (None: any)."""
        return self.config.get("probe_size")

    def save(self, path: str | Path) -> Path:
        """Write the policy file (see the module docstring); returns its path."""
        if "scorer" not in self.config:
            raise ValueError(
                'config["scorer"] must name the factory of apply, e.g. '
                '"metaal.strategies.learned:linear_scorer", so that load can rebuild it'
            )
        resolve_scorer(self.config["scorer"])
        document = {
            "format_version": FORMAT_VERSION,
            "config": json.dumps(self.config),
            "params": serialization.to_state_dict(self.params),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomically: a run killed while saving never leaves a truncated policy file
        return atomic.write_bytes(path, serialization.msgpack_serialize(document))

    def __repr__(self) -> str:
        """What the policy is, in one line (never its weights)."""
        config = self.config
        parts = [f"scorer={str(config.get('scorer', '?')).rsplit(':', 1)[-1]!r}"]
        if "members" in config:
            parts.append(f"members={len(config['members'])}")
        parts.append(f"shortlist={config.get('shortlist', 0)}")
        if proposers_of(config):
            parts.append(f"proposers={','.join(proposers_of(config))}")
        if lookahead_of(config):
            parts.append(f"lookahead={lookahead_of(config)}")
            if lookahead_stats_of(config) != STATS:
                parts.append(f"lookahead_stats={','.join(lookahead_stats_of(config))}")
        parts.append(f"features={len(trained_features(config))}")
        for key in ("agent", "env_steps"):
            if key in config:
                parts.append(f"{key}={config[key]!r}")
        return f"LearnedStrategy({', '.join(parts)})"

    @classmethod
    def load(cls, path: str | Path) -> LearnedStrategy:
        """Read a policy file written by `save`.

        `"default"` is the shipped default policy; the folder of a finished
        `metaal train` run stands for its `policy` file.
        """
        path = DEFAULT_POLICY if str(path) == "default" else Path(path)
        if path.is_dir():
            if (path / POLICY_FILE).is_file():
                path = path / POLICY_FILE
            elif (path / "checkpoints").is_dir():
                raise ValueError(
                    f"{path}: a training run that has not finished (no {path / POLICY_FILE} "
                    f"yet); finish it with `metaal train --resume {path}`"
                )
            else:
                raise ValueError(
                    f"{path}: a folder without a policy file; give a policy file, or the folder "
                    "of a finished `metaal train` run"
                )
        if not path.is_file():
            raise ValueError(
                f"{path}: policy file not found; check the path, or use 'default' for the "
                "shipped policy"
            )
        try:
            document = serialization.msgpack_restore(path.read_bytes())
            version = document["format_version"]
            config = json.loads(document["config"])
            params = document["params"]
        except Exception as err:
            raise ValueError(
                f"{path}: not a metaal policy file ({type(err).__name__}: {err}); "
                "write policies with LearnedStrategy.save"
            ) from err
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: policy format version {version}, this metaal reads {FORMAT_VERSION}; "
                "re-save the policy with this version"
            )
        params = jax.tree.map(jnp.asarray, params)
        return cls(resolve_scorer(config["scorer"])(config), params, config)

    @classmethod
    def ensemble(cls, members: list[LearnedStrategy]) -> LearnedStrategy:
        """One policy scoring by the mean of `members`' standardised scores.

        See `metaal.policy_net.ensemble_scorer`. The members differ only in their
        params (e.g. training seeds). Its config is the first member's, with
        every member's config kept under `"members"`.
        """
        if not members:
            raise ValueError("an ensemble needs at least one member policy")
        first = members[0].config

        def architecture(config: dict) -> tuple:
            return (
                config["scorer"],
                config.get("network"),
                config.get("shortlist", 0),
                trained_features(config),
                proposers_of(config),
                selector_state_of(config),
                lookahead_of(config),
                lookahead_stats_of(config),
            )

        for member in members[1:]:
            if architecture(member.config) != architecture(first):
                raise ValueError(
                    "ensemble members must share scorer, network, shortlist, features, "
                    "proposers, selector step columns and look-ahead statistics; got "
                    f"{architecture(first)} and {architecture(member.config)}"
                )
        config = {
            **first,
            "scorer": ENSEMBLE_SCORER,
            "member_scorer": first["scorer"],
            "members": [m.config for m in members],
        }
        params = {"members": jax.tree.map(lambda *p: jnp.stack(p), *(m.params for m in members))}
        return cls(resolve_scorer(config["scorer"])(config), params, config)

    def with_shortlist(self, k: int) -> LearnedStrategy:
        """The same policy, re-ranking only margin's `k` most uncertain candidates (0: all).

        See `metaal.policy_net.shortlisted_scorer`. Works for network and
        linear policies and for votes of them; replaces any shortlist the
        policy had.
        """
        if k < 0:
            raise ValueError(f"shortlist must be >= 0 (0: no shortlist), got {k}")
        if proposers_of(self.config):
            raise ValueError(
                "a selector policy chooses among its proposers' picks "
                f"({', '.join(proposers_of(self.config))}); a margin shortlist does not apply to it"
            )
        if lookahead_of(self.config):
            raise ValueError(
                f"a look-ahead policy already scores only margin's {lookahead_of(self.config)} "
                "most uncertain candidates; a second margin shortlist does not apply to it"
            )
        key = "member_scorer" if self.config["scorer"] == ENSEMBLE_SCORER else "scorer"
        restrictable = (SCORER, SHORTLISTED_SCORER, LINEAR_SCORER)
        if resolve_scorer(self.config[key]) not in [resolve_scorer(s) for s in restrictable]:
            raise ValueError(
                f"a shortlist restricts the scorers {restrictable}; this policy's is "
                f"{self.config[key]!r}"
            )
        config = {**self.config, key: SHORTLISTED_SCORER, "shortlist": int(k)}
        return LearnedStrategy(resolve_scorer(config["scorer"])(config), self.params, config)

    def query(self, X, y, clf=None, candidates=None, batch_size=1, return_utilities=False):
        """scikit-activeml's `query` (see `metaal.strategies.adapter.QueryStrategy`).

        The first call creates the adapter, seeded by `config["random_state"]`
        (default 0, so the same call gives the same picks in every process;
        set it to another int to draw another tie-breaking and probe set); later
        calls continue the same episode. Refuses what `metaal query` refuses, with
        the same messages (`ValueError`): infinite values or an empty column in
        `X`, fewer than two labelled classes, a batch larger than the pool.
        """
        from metaal.strategies.adapter import QueryStrategy

        if self._adapter is None:
            self._adapter = QueryStrategy(
                self.to_strategy(),
                random_state=self.config.get("random_state", DEFAULT_RANDOM_STATE),
                learner=self.learner,
                probe_size=self.probe_size or 32,
            )
        return self._adapter.query(X, y, clf, candidates, batch_size, return_utilities)
