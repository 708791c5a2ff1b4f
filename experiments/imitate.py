"""Train the imitation (DAgger) query policy by recipe name and export it as a policy file.

    metaal train --agent imitation --variant sl16_big --members 3 --seed 0 --out runs/imitation

The recipes (`VARIANTS`) live in `experiments.research_imitation`, where
each one's held-out ablation is measured; the default policy shipped in
`metaal/policies/default` was made by `DEFAULT_VARIANT`, an ensemble of
`DEFAULT_MEMBERS` runs with seeds 0, 1, 2. DAgger
runs as one jitted call of a few minutes, so unlike PPO and DQN it writes no
intermediate checkpoints: a killed run is re-run (same seed, same result).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from experiments.research_imitation import VARIANTS, policy_of, train_variant
from metaal.strategies.learned import LearnedStrategy

#: The recipe of the shipped default policy.
DEFAULT_VARIANT = "sl16_big"
#: Members (training seeds) of the shipped default policy's ensemble.
DEFAULT_MEMBERS = 3
POLICY_FILE = "policy.msgpack"


def train_imitation(
    out: str | Path,
    variant: str = DEFAULT_VARIANT,
    seed: int = 0,
    command: str = "",
    members: int = DEFAULT_MEMBERS,
) -> Path:
    """Train recipe `variant` with seeds seed..seed+members-1; write OUT/policy.msgpack.

    With more than one member the policy is their ensemble
    (`LearnedStrategy.ensemble`): policies trained from different seeds make
    different mistakes, and the mean of their standardised scores cancels
    much of them. OUT/train.json records each member's training.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown imitation recipe {variant!r}; known: {', '.join(VARIANTS)}")
    if members < 1:
        raise ValueError(f"--members must be at least 1, got {members}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = VARIANTS[variant]
    print(f"imitation: {variant}: {recipe.description}", flush=True)
    started = time.perf_counter()
    policies, trained = [], []
    for member_seed in range(seed, seed + members):
        if members > 1:
            print(f"imitation: member seed {member_seed} ({len(policies) + 1}/{members})")
        net_params, round_metrics, seconds = train_variant(recipe, member_seed)
        policies.append(policy_of(recipe, variant, net_params, member_seed, command))
        trained.append({"seed": member_seed, "seconds": seconds, "metrics": round_metrics})
        for r, (loss, agree) in enumerate(
            zip(round_metrics["loss"], round_metrics["agreement"], strict=True)
        ):
            print(f"  round {r}: loss {loss:.4f}, oracle agreement {agree:.3f}", flush=True)
    policy = policies[0] if members == 1 else LearnedStrategy.ensemble(policies)
    path = policy.save(out / POLICY_FILE)
    summary = {
        "variant": variant,
        "seed": seed,
        "members": trained,
        "seconds": sum(t["seconds"] for t in trained),
        "wall_seconds": time.perf_counter() - started,
        "command": command,
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    print(f"imitation: trained in {summary['seconds']:.0f} s; policy written to {path}", flush=True)
    return path
