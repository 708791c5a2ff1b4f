"""The ceiling of a strategy selector: the one-step oracle restricted to its proposers' picks.

    python -m metaal.experiments.selector_headroom --proposers margin,badge,random \
        --suite train --seeds 20 --first-seed 10000 --out runs/headroom_mbr
    python -m metaal.experiments.policy_table --heuristics runs/val_heuristics \
        --policy runs/headroom_mbr

At each step every proposer makes its pick (`metaal.strategies.selector.proposals`, the
draws a selector sees), the env's look-ahead labels each pick in turn (refit, validation
accuracy), and the pick of the largest validation gain is queried, ties at random. It reads
validation labels, so it is a reference and not deployable: what a selector among these
families would reach if it always knew which pick gains most one step ahead. A selector
that is near margin while this is far above it has headroom it does not find; one that is
near this has none left.

`--shortlist K` adds margin's K most uncertain candidates to the picks: `--shortlist 16`
alone is the ceiling of a look-ahead policy (`la16_*`, which chooses among those 16), and
with proposers, what widening that shortlist by their picks could add to it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from metaal import tracking
from metaal.data import suite_names
from metaal.experiments import evaluate
from metaal.strategies.base import Context, Strategy
from metaal.strategies.lookahead import margin_shortlist
from metaal.strategies.selector import check_proposers, proposals


def selector_oracle(proposers: Sequence[str], shortlist: int = 0) -> Strategy:
    """The look-ahead oracle over the picks of `proposers` (named `oracle_<p1>_<p2>...`).

    With `shortlist` K > 0 margin's K most uncertain candidates are candidates too (the
    name gains `_top<K>`).
    """
    if shortlist < 0:
        raise ValueError(f"shortlist must be >= 0 (0: the picks only), got {shortlist}")
    if not proposers and not shortlist:
        raise ValueError("the selector oracle needs proposers, a shortlist, or both")
    names = check_proposers(proposers) if proposers else ()

    def score(key: jax.Array, obs, ctx: Context, memory):
        if ctx.lookahead is None:
            raise ValueError(
                "the selector oracle needs Context.lookahead (validation labels), which only "
                "the environment provides"
            )
        idx, valid = [], []  # the candidates and whether each is one, from every source
        if names:
            picked = proposals(names, key, obs, ctx)  # (P, C), one pick per row
            idx.append(jnp.argmax(picked, axis=1))
            valid.append(jnp.any(picked, axis=1))
        if shortlist:
            rows = margin_shortlist(ctx, obs.action_mask, shortlist)
            idx.append(rows)
            valid.append(obs.action_mask[rows])
        idx, valid = jnp.concatenate(idx), jnp.concatenate(valid)
        gains = jnp.where(valid, jax.vmap(ctx.lookahead)(idx), -jnp.inf)
        return jnp.full(obs.action_mask.shape, -jnp.inf).at[idx].max(gains), memory

    parts = [*names, *([f"top{shortlist}"] if shortlist else [])]
    name = "oracle_" + "_".join(parts)
    return Strategy(name, "oracle", score, deployable=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate the selector oracle on a suite (results as `metaal evaluate` writes them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--proposers", default="", help="comma-separated proposers (none: the shortlist only)"
    )
    parser.add_argument(
        "--shortlist",
        type=int,
        default=0,
        help="also margin's K most uncertain candidates (0: the proposers' picks only)",
    )
    parser.add_argument("--suite", default="train", help="suite name (metaal.data.suites)")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=10000, help="first seed")
    parser.add_argument("--budget", type=int, default=100, help="queries per episode")
    parser.add_argument("--out", required=True, help="output folder (must not exist)")
    parser.add_argument(
        "--wandb-mode", choices=tracking.MODES, default="offline", help="W&B logging mode"
    )
    args = parser.parse_args(argv)
    try:
        proposers = [p for p in args.proposers.split(",") if p]
        strategy = selector_oracle(proposers, args.shortlist)
        names = suite_names(args.suite)
    except ValueError as err:
        parser.error(str(err))
    evaluate.evaluate(
        names,
        [strategy],
        seeds=range(args.first_seed, args.first_seed + args.seeds),
        budget=args.budget,
        out_dir=args.out,
        wandb_mode=args.wandb_mode,
        suite=args.suite,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
