"""Research loop of the imitation-learned query policy: train variants, evaluate on held-out data.

    python experiments/research_imitation.py heuristics          # cache the baselines' runs once
    python experiments/research_imitation.py run sl16_big --seed 0    # train + evaluate variants
    python experiments/research_imitation.py ensemble sl16_big --seeds 0 1 2  # seeds' ensemble
    python experiments/research_imitation.py table               # ablation table of every run
    python experiments/research_imitation.py save sl16_big       # make a run the default policy

Protocol (the one `metaal evaluate` uses, so numbers are comparable): the 12
`heldout` data sets, seeds 0..19, budget 100 from 5 initial labels, the whole
unlabelled pool as candidates, paired keys (the same split, initial set and
env randomness for every strategy). A run's score is its normalised AULC
(mean test accuracy over steps 0..100); ranks are over data sets by mean
AULC; win/tie/loss against margin is a paired Wilcoxon test per data set at
0.05 (`metaal.metrics`).

Training (`agents.imitation`) uses only the `train` suite (and synthetic
tasks for variants that say so), never `heldout`: `check_heldout_unseen`
guards it. Data sets wider than `max_features` are projected on their
leading principal components (fitted on the pool) for training only: the
policy reads no raw features, and the narrow padded shapes make the oracle's
refits several times cheaper.

Outputs go to `runs/imitation/<variant>[_seed<N>]/`: `results.csv`
(held-out curves), `train.json` (metrics per round, training seconds,
config) and the policy file (`LearnedStrategy.save`).

What the variants showed (numbers in the ablation table, `table`): free
policies (any candidate) lose to margin whatever the loss, targets, network
or training data, because the one-step oracle's choices are driven by the
candidate's own label, which no feature shows; imitating it teaches a taste
for large model changes (far, high-gradient points) that transfers badly
(spam7, hpc_data). Restricting the policy to reorder margin's most uncertain
candidates (`sl*`) brings it level with margin, not past it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from agents.imitation import ImitationConfig, as_policy, make_train
from envs.core import EnvConfig, check_fits, make_params
from experiments.evaluate import curves_frame, episode_runner, make_batch, seed_keys
from metaal import metrics
from metaal.data import (
    Split,
    Task,
    check_heldout_unseen,
    load_task,
    make_split,
    stack_splits,
    suite_names,
)
from metaal.strategies import get_strategy
from metaal.strategies.learned import LearnedStrategy

OUT = Path("runs/imitation")
DEFAULT_POLICY_DIR = Path("metaal/policies/default")
HELDOUT = "heldout"
SEEDS = 20
BUDGET = 100
N_INITIAL = 5
BASELINES = (
    "random",
    "margin",
    "entropy",
    "least_confidence",
    "coreset",
    "badge",
    "egl",
    "info_density",
    "density",
    "typiclust",
    "albl",
)
EVAL_ENV = EnvConfig(budget=BUDGET, n_initial=N_INITIAL, n_candidates=None)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training recipe: the DAgger config plus the training data."""

    description: str
    config: ImitationConfig
    suite: str = "train"
    split_seeds: int = 1
    """Splits per training data set (different pools of the same data)."""
    max_features: int = 40
    """Wider training data sets are PCA-projected to this many features."""
    max_classes: int = 26
    """Training data sets with more classes are left out (padding to K classes costs K)."""
    heavy_tails: bool = False
    """Add a copy of every training data set with half its features made heavy-tailed."""


#: The first recipe (validation-accuracy expert, free policy); every variant changes it.
BASE = ImitationConfig(
    expert_set="val",
    first_policy="oracle",
    beta_decay=0.5,
    targets="zscore",
    shortlist=0,
    n_labels=32,
    n_policy_labels=8,
    n_rounds=4,
    n_envs=16,
    updates_per_round=300,
)
POOL = dataclasses.replace(BASE, expert_set="pool+val")
M0 = dataclasses.replace(POOL, first_policy="margin", beta_decay=0.0)
SL16 = dataclasses.replace(M0, targets="episode", shortlist=16, n_labels=16, n_policy_labels=16)
VARIANTS: dict[str, Variant] = {
    "base": Variant(
        "expert: env look-ahead (val accuracy); MLP (64,64), listwise z-scores T=0.5, "
        "4 rounds x 16 envs, 32 labels (8 policy top)",
        BASE,
    ),
    "pool": Variant("expert measures accuracy on unlabelled pool + val (privileged)", POOL),
    "pool_linear": Variant("pool, linear ranker", dataclasses.replace(POOL, hidden=())),
    "pool_regression": Variant(
        "pool, regression on z-scores", dataclasses.replace(POOL, loss="regression")
    ),
    "pool_T2": Variant(
        "pool, listwise temperature 2 (closer to expected gain than to P(best))",
        dataclasses.replace(POOL, temperature=2.0),
    ),
    "pool_regression_linear": Variant(
        "pool, regression, linear ranker",
        dataclasses.replace(POOL, loss="regression", hidden=()),
    ),
    "m0": Variant(
        "pool; margin acts in round 0 and the learner alone afterwards (beta 0): no oracle states",
        M0,
    ),
    "m0_episode": Variant(
        "m0, targets centred per state and scaled per episode",
        dataclasses.replace(M0, targets="episode"),
    ),
    "m0_episode_linear": Variant(
        "m0_episode, linear ranker",
        dataclasses.replace(M0, targets="episode", hidden=()),
    ),
    "m0_episode_heavy": Variant(
        "m0_episode, plus a heavy-tailed copy of every training set",
        dataclasses.replace(M0, targets="episode"),
        heavy_tails=True,
    ),
    "m0_episode_synthetic": Variant(
        "m0_episode, trained on train + 32 synthetic tasks",
        dataclasses.replace(M0, targets="episode"),
        suite="train+synthetic:32",
    ),
    "sl16": Variant(
        "m0_episode, but the policy only reorders margin's 16 most uncertain candidates "
        "(all 16 labelled by the expert)",
        SL16,
    ),
    "sl16_linear": Variant(
        "sl16, linear ranker",
        dataclasses.replace(
            M0, targets="episode", shortlist=16, n_labels=16, n_policy_labels=16, hidden=()
        ),
    ),
    "sl8": Variant(
        "sl16 with a shortlist of 8",
        dataclasses.replace(SL16, shortlist=8, n_labels=8, n_policy_labels=8),
    ),
    "sl16_big": Variant(
        "sl16 with 3x the data: 6 rounds x 32 envs, 600 updates per round",
        dataclasses.replace(SL16, n_rounds=6, n_envs=32, updates_per_round=600),
    ),
    "sl16_huge": Variant(
        "sl16 with ~5x the data of sl16_big: 8 rounds x 64 envs, 800 updates per round",
        dataclasses.replace(SL16, n_rounds=8, n_envs=64, updates_per_round=800),
    ),
    "sl32_huge": Variant(
        "sl16_huge with a shortlist of 32 (all labelled)",
        dataclasses.replace(
            SL16,
            n_rounds=8,
            n_envs=64,
            updates_per_round=800,
            shortlist=32,
            n_labels=32,
            n_policy_labels=32,
        ),
    ),
    "pool_pairwise": Variant("pool, pairwise RankNet", dataclasses.replace(POOL, loss="pairwise")),
}


# --- training data --------------------------------------------------------------------


def project_features(split: Split, max_features: int) -> Split:
    """`split` with its features replaced by the pool's leading principal components (scaled)."""
    if split.n_features <= max_features:
        return split
    _, _, vt = np.linalg.svd(split.pool_X - split.pool_X.mean(0), full_matrices=False)
    basis = vt[:max_features].T
    pool = split.pool_X @ basis
    mean, std = pool.mean(0), np.maximum(pool.std(0), 1e-12)

    def proj(X):
        return ((X @ basis - mean) / std).astype(np.float32)

    return dataclasses.replace(
        split, pool_X=proj(split.pool_X), val_X=proj(split.val_X), test_X=proj(split.test_X)
    )


def heavy_tailed(task: Task, seed: int) -> Task:
    """`task` with half its features (at random) passed through exp(a * z), a in [0.5, 1.5].

    Real data often has count-like, skewed features whose far outliers are
    useless to label; the training suite has few, so the policy never learns
    to avoid them. z is the feature standardised over the data set; missing
    values stay missing.
    """
    rng = np.random.default_rng(seed)
    X = task.X.astype(np.float64).copy()
    mean, std = np.nanmean(X, 0), np.nanstd(X, 0)
    for j in np.flatnonzero(rng.uniform(size=X.shape[1]) < 0.5):
        if std[j] > 0:
            z = np.clip((X[:, j] - mean[j]) / std[j], -10, 10)
            X[:, j] = np.exp(rng.uniform(0.5, 1.5) * z)
    return dataclasses.replace(task, X=X, name=f"{task.name}+heavy_tails")


def training_params(variant: Variant):
    """Batched env params of every training split of `variant` (never a held-out data set)."""
    names = [n for n in suite_names(variant.suite) if load_task(n).n_classes <= variant.max_classes]
    check_heldout_unseen(names, suite_names(HELDOUT))
    tasks = [load_task(name) for name in names]
    if variant.heavy_tails:
        tasks += [heavy_tailed(task, i) for i, task in enumerate(tasks)]
    splits = [
        project_features(make_split(task, 1000 + s), variant.max_features)
        for task in tasks
        for s in range(variant.split_seeds)
    ]
    batch = stack_splits(splits)
    check_fits(batch, variant.config.env, variant.suite)
    return jax.vmap(make_params)(batch), names


def train_variant(variant: Variant, seed: int) -> tuple[object, dict, float]:
    """Train `variant`; returns scorer params, per-round metrics and wall-clock seconds."""
    params, _ = training_params(variant)
    started = time.perf_counter()
    net_params, round_metrics = make_train(variant.config)(jax.random.key(seed), params)
    jax.block_until_ready(net_params)
    seconds = time.perf_counter() - started
    return net_params, jax.tree.map(lambda x: np.asarray(x).tolist(), round_metrics), seconds


def policy_of(variant: Variant, name: str, net_params, seed: int, command: str) -> LearnedStrategy:
    """The trained scorer as a `LearnedStrategy` whose config records how it was made."""
    return as_policy(
        variant.config,
        net_params,
        variant=name,
        description=variant.description,
        train_suite=variant.suite,
        split_seeds=variant.split_seeds,
        max_features=variant.max_features,
        seed=seed,
        command=command,
    )


# --- held-out evaluation --------------------------------------------------------------


def evaluate_strategy(strategy, config: EnvConfig = EVAL_ENV) -> pd.DataFrame:
    """Held-out curves of one strategy under the protocol of `metaal evaluate` (same keys)."""
    names = suite_names(HELDOUT)
    tasks = [load_task(n) for n in names]
    seeds = list(range(SEEDS))
    batch = make_batch(tasks, seeds)
    params = jax.vmap(make_params)(batch)
    keys = jnp.tile(seed_keys(seeds), len(tasks))
    acc, n_labeled = episode_runner(strategy, config)(keys, params)
    return curves_frame(names, seeds, strategy.name, np.asarray(acc), np.asarray(n_labeled))


def baseline_results() -> pd.DataFrame:
    """Held-out curves of every baseline, computed once and cached in `OUT`."""
    frames = []
    for name in BASELINES:
        path = OUT / f"heldout_{name}.csv"
        if not path.exists():
            evaluate_strategy(get_strategy(name)).to_csv(path, index=False)
        frames.append(pd.read_csv(path))
    return pd.concat(frames, ignore_index=True)


def compare(results: pd.DataFrame, learned: str) -> dict:
    """Mean ranks, AULC per data set and W/T/L of `learned` against each baseline."""
    summary = metrics.summarise(results)
    ranks = metrics.mean_ranks(summary)
    aulc = summary.pivot(index="dataset", columns="strategy", values="aulc_mean")
    wtl = metrics.win_tie_loss(results)
    wtl = wtl[wtl.strategy == learned].set_index("opponent")
    return {"ranks": ranks, "aulc": aulc, "wtl": wtl}


# --- commands -------------------------------------------------------------------------


def run(names: list[str], seed: int, command: str) -> None:
    """Train and evaluate each variant; print its comparison.

    Runs go to `OUT/<variant>` for seed 0 and `OUT/<variant>_seed<seed>` otherwise.
    """
    baselines = baseline_results()
    for variant_name in names:
        variant = VARIANTS[variant_name]
        name = run_name(variant_name, seed)
        out = OUT / name
        out.mkdir(parents=True, exist_ok=True)
        net_params, round_metrics, seconds = train_variant(variant, seed)
        print(f"{name}: trained in {seconds:.0f}s; rounds: {round_metrics}", flush=True)
        policy = policy_of(variant, variant_name, net_params, seed, command)
        policy.save(out / "policy.msgpack")
        results = evaluate_strategy(policy.to_strategy(name))
        results.to_csv(out / "results.csv", index=False)
        (out / "train.json").write_text(
            json.dumps({"seconds": seconds, "metrics": round_metrics, **policy.config}, indent=1)
        )
        print(report_variant(pd.concat([baselines, results]), name), flush=True)


def run_name(variant_name: str, seed: int) -> str:
    """Folder name of a variant's run: the variant for seed 0, `<variant>_seed<seed>` otherwise."""
    return variant_name if seed == 0 else f"{variant_name}_seed{seed}"


def ensemble(variant_name: str, seeds: list[int], command: str) -> None:
    """Evaluate the ensemble of a variant's runs with `seeds` (each trained by `run` first)."""
    runs = [OUT / run_name(variant_name, s) for s in seeds]
    missing = [str(r) for r in runs if not (r / "policy.msgpack").exists()]
    if missing:
        raise SystemExit(f"no trained policy in {missing}; train them with `run --seed N` first")
    policy = LearnedStrategy.ensemble([LearnedStrategy.load(r / "policy.msgpack") for r in runs])
    policy.config["command"] = command
    name = f"{variant_name}_ens" + "".join(str(s) for s in seeds)
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    policy.save(out / "policy.msgpack")
    results = evaluate_strategy(policy.to_strategy(name))
    results.to_csv(out / "results.csv", index=False)
    trained = [json.loads((r / "train.json").read_text()) for r in runs]
    summary = {
        "seconds": sum(t["seconds"] for t in trained),
        "metrics": {"agreement": [np.mean([t["metrics"]["agreement"][-1] for t in trained])]},
        **policy.config,
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    print(report_variant(pd.concat([baseline_results(), results]), name), flush=True)


def report_variant(results: pd.DataFrame, name: str) -> str:
    """Per-data-set AULC (learned, margin, random), mean ranks and W/T/L against margin."""
    c = compare(results, name)
    aulc = c["aulc"][[name, "margin", "random"]].copy()
    aulc["learned - margin"] = aulc[name] - aulc["margin"]
    lines = [aulc.round(4).to_string(), "", "mean ranks:", c["ranks"].round(2).to_string()]
    m = c["wtl"].loc["margin"]
    lines.append(f"vs margin: W/T/L {m.wins}/{m.ties}/{m.losses}")
    return "\n".join(lines)


def table() -> pd.DataFrame:
    """One row per trained variant: its mean rank among all baselines, AULC and W/T/L vs margin."""
    baselines = baseline_results()
    rows = []
    for out in sorted(p for p in OUT.iterdir() if (p / "results.csv").exists()):
        name = out.name
        results = pd.concat([baselines, pd.read_csv(out / "results.csv")])
        c = compare(results, name)
        ranks = c["ranks"]
        best_heuristic = ranks.drop(name).idxmin()
        m = c["wtl"].loc["margin"]
        train = json.loads((out / "train.json").read_text())
        rows.append(
            {
                "variant": name,
                "mean_rank": ranks[name],
                "best_heuristic": f"{best_heuristic} {ranks[best_heuristic]:.2f}",
                "margin_rank": ranks["margin"],
                "aulc": c["aulc"][name].mean(),
                "aulc - margin": (c["aulc"][name] - c["aulc"]["margin"]).mean(),
                "W/T/L vs margin": f"{m.wins}/{m.ties}/{m.losses}",
                "train_s": round(train["seconds"]),
                "final agreement": train["metrics"]["agreement"][-1],
            }
        )
    return pd.DataFrame(rows).sort_values("mean_rank")


def save_default(name: str) -> None:
    """Copy variant `name`'s policy to the packaged default policy (and a readable config)."""
    policy = LearnedStrategy.load(OUT / name / "policy.msgpack")
    DEFAULT_POLICY_DIR.mkdir(parents=True, exist_ok=True)
    policy.save(DEFAULT_POLICY_DIR / "policy.msgpack")
    (DEFAULT_POLICY_DIR / "policy.json").write_text(json.dumps(policy.config, indent=1))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("heuristics", "run", "ensemble", "table", "save"))
    parser.add_argument("variants", nargs="*", help=f"variant names: {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="ensemble: the members' seeds"
    )
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    if args.command == "heuristics":
        print(metrics.mean_ranks(metrics.summarise(baseline_results())).round(2).to_string())
    elif args.command == "run":
        command = "python experiments/research_imitation.py " + " ".join(argv or sys.argv[1:])
        run(args.variants, args.seed, command)
    elif args.command == "ensemble":
        if len(args.variants) != 1:
            parser.error("ensemble takes exactly one variant name")
        command = "python experiments/research_imitation.py " + " ".join(argv or sys.argv[1:])
        ensemble(args.variants[0], args.seeds, command)
    elif args.command == "table":
        print(table().round(4).to_string(index=False))
    else:
        if len(args.variants) != 1:
            parser.error("save takes exactly one variant name")
        save_default(args.variants[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
