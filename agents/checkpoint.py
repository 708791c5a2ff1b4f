"""Checkpoints of training runs (save, find the last, restore exactly) and policy export.

A run folder holds:

    DIR/checkpoints/<updates, 10 digits>/state.msgpack   the runner: train state with its
                                                         optimiser state, env slots, replay
                                                         buffer (DQN), RNG key, update counter
    DIR/checkpoints/<updates, 10 digits>/meta.json       format version, updates, env steps,
                                                         agent, the resolved config
    DIR/policy                                           the exported policy (a
                                                         `LearnedStrategy` file)

A checkpoint is written to a temporary folder and renamed into place, so a
run killed while saving leaves the previous checkpoint intact; the newest
`KEEP` are kept. Restoring needs a template runner of the same config (its
shapes and dtypes, e.g. from `jax.eval_shape`): the restored runner is bit
for bit the saved one, so a resumed run continues exactly as if it had not
stopped. PRNG keys are stored as their raw key data.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from metaal.policy_net import resolve_scorer
from metaal.strategies.learned import RUN_POLICY_FILE, LearnedStrategy

FORMAT_VERSION = 1
#: Checkpoints kept per run (the newest).
KEEP = 2
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.msgpack"
META_FILE = "meta.json"
POLICY_FILE = RUN_POLICY_FILE


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the path and what to do."""


def _is_key(x: Any) -> bool:
    return jnp.issubdtype(getattr(x, "dtype", None) or np.float32, jax.dtypes.prng_key)


def keys_as_data(tree: Any) -> Any:
    """`tree` with every PRNG key array replaced by its raw key data (uint32)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _key_data_template(template: Any) -> Any:
    def convert(t):
        if _is_key(t):
            return jax.eval_shape(jax.random.key_data, t)
        return t

    return jax.tree.map(convert, template)


def save(run_dir: str | Path, updates: int, runner: Any, meta: dict[str, Any]) -> Path:
    """Write the runner after `updates` updates with `meta` (JSON-able); returns the folder."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{updates:010d}"
    tmp = root / f".tmp-{updates:010d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = jax.device_get(keys_as_data(runner))
    (tmp / STATE_FILE).write_bytes(serialization.to_bytes(state))
    document = {
        "format_version": FORMAT_VERSION,
        "updates": int(updates),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **meta,
    }
    (tmp / META_FILE).write_text(json.dumps(document, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found, key=lambda p: int(p.name))


def latest(run_dir: str | Path) -> Path:
    """The newest checkpoint folder of a run; CheckpointError if the folder holds no run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"{run_dir}: no such folder; --resume needs the --out folder of an earlier "
            "`metaal train` run"
        )
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(
            f"{run_dir}: holds no training run (no checkpoint under {run_dir / CHECKPOINTS}); "
            "start a new run with --out instead of --resume"
        )
    return found[-1]


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint folder, after checking that this code can read it."""
    path = Path(checkpoint) / META_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; the checkpoint is incomplete: delete {Path(checkpoint)} to "
            "resume from the previous checkpoint, or start a new run"
        )
    try:
        meta = json.loads(path.read_text())
        version = meta["format_version"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{path}: unreadable checkpoint metadata ({type(err).__name__}: {err}); delete "
            f"{Path(checkpoint)} to resume from the previous checkpoint, or start a new run"
        ) from err
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, but this code reads version "
            f"{FORMAT_VERSION}; resume it with the metaal version that wrote it, or start "
            "a new run"
        )
    return meta


def restore(checkpoint: str | Path, template: Any) -> Any:
    """The runner saved in `checkpoint`, shaped like `template` (arrays or ShapeDtypeStructs)."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; delete {Path(checkpoint)} to resume from the previous "
            "checkpoint, or start a new run"
        )
    target = _key_data_template(template)
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
        state = serialization.from_state_dict(target, raw)
    except Exception as err:
        raise CheckpointError(
            f"{path}: corrupt checkpoint ({type(err).__name__}: {err}); delete "
            f"{Path(checkpoint)} to resume from the previous checkpoint, or start a new run"
        ) from err
    flat_t, tree_t = jax.tree.flatten(target)
    flat_s, tree_s = jax.tree.flatten(state)
    mismatched = tree_t != tree_s or any(
        np.shape(s) != tuple(t.shape) or np.asarray(s).dtype != t.dtype
        for t, s in zip(flat_t, flat_s, strict=True)
    )
    if mismatched:
        raise CheckpointError(
            f"{path}: the saved arrays do not match this run's shapes; the checkpoint was "
            "written with another config (agent, env or network sizes): resume with the "
            "config stored in its meta.json, or start a new run"
        )

    def convert(t, s):
        if _is_key(t):
            return jax.random.wrap_key_data(jnp.asarray(s))
        return jnp.asarray(s)

    return jax.tree.map(convert, template, state)


def policy_of(params: Any, config: dict[str, Any], shortlist: int = 0) -> LearnedStrategy:
    """The `LearnedStrategy` of scorer `params` with `config` (`metaal.policy_net.policy_config`).

    With `shortlist` > 0 the policy re-ranks only margin's `shortlist` most
    uncertain candidates (`LearnedStrategy.with_shortlist`).
    """
    policy = LearnedStrategy(
        resolve_scorer(config["scorer"])(config), jax.device_get(params), config
    )
    return policy.with_shortlist(shortlist) if shortlist else policy


def export_policy(
    path: str | Path, params: Any, config: dict[str, Any], shortlist: int = 0
) -> Path:
    """Write `policy_of(params, config, shortlist)` as a policy file; returns its path.

    The file is a `LearnedStrategy` file: `LearnedStrategy.load(path)` and
    `metaal evaluate --policy path` read it.
    """
    return policy_of(params, config, shortlist).save(path)
