"""Train the imitation (DAgger) query policy by recipe name and export it as a policy file.

    metaal train --agent imitation --variant sl16_big --seed 0 --out runs/imitation

The recipes (`VARIANTS`) live in `experiments.research_imitation`, where
each one's held-out ablation is measured; the default policy shipped in
`metaal/policies/default` was made by `DEFAULT_VARIANT` with seed 0. DAgger
runs as one jitted call of a few minutes, so unlike PPO and DQN it writes no
intermediate checkpoints: a killed run is re-run (same seed, same result).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from experiments.research_imitation import VARIANTS, policy_of, train_variant

#: The recipe of the shipped default policy (best held-out mean rank of the ablation).
DEFAULT_VARIANT = "sl16_big"
POLICY_FILE = "policy.msgpack"


def train_imitation(
    out: str | Path, variant: str = DEFAULT_VARIANT, seed: int = 0, command: str = ""
) -> Path:
    """Train recipe `variant` with `seed`; write OUT/policy.msgpack and OUT/train.json."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown imitation recipe {variant!r}; known: {', '.join(VARIANTS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = VARIANTS[variant]
    print(f"imitation: {variant}: {recipe.description}", flush=True)
    started = time.perf_counter()
    net_params, round_metrics, seconds = train_variant(recipe, seed)
    policy = policy_of(recipe, variant, net_params, seed, command)
    path = policy.save(out / POLICY_FILE)
    summary = {
        "variant": variant,
        "seed": seed,
        "seconds": seconds,
        "wall_seconds": time.perf_counter() - started,
        "metrics": round_metrics,
        "command": command,
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    for r, (loss, agree) in enumerate(
        zip(round_metrics["loss"], round_metrics["agreement"], strict=True)
    ):
        print(f"  round {r}: loss {loss:.4f}, agreement with the oracle {agree:.3f}", flush=True)
    print(f"imitation: trained in {seconds:.0f} s; policy written to {path}", flush=True)
    return path
