"""Two processes through `jax.distributed` (CPU collectives) train the single-process run.

The same global config: two processes of one CPU device each, joined on
127.0.0.1, against one process with two forced host devices. Both split the
env slots over two devices, so they run the same partitioned program; only
process 0 writes (one metrics line per chunk, one W&B run, one lock).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from metaal.experiments import distributed
from metaal.strategies.learned import LearnedStrategy

TRAIN = ["train", "--agent", "ppo", "--preset", "tiny", "--eval-tasks", "1", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metaal(args, devices=1, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="offline", WANDB_SILENT="true")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(
        [sys.executable, "-m", "metaal.experiments.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc):
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_two_processes_train_what_one_process_on_two_devices_trains(tmp_path):
    single = tmp_path / "single"
    finished(metaal([*TRAIN, "--devices", "2", "--out", str(single)], devices=2))
    shared = tmp_path / "shared"
    address = f"127.0.0.1:{free_port()}"
    procs = [
        metaal(
            [
                *TRAIN,
                "--out",
                str(shared),
                "--coordinator-address",
                address,
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            cwd=tmp_path,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [finished(p) for p in procs]
    assert "process 1 of 2: done (process 0 wrote)" in outs[1]
    a = LearnedStrategy.load(single / "policy").params
    b = LearnedStrategy.load(shared / "policy").params
    gap = max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert gap < 1e-5, gap  # the same program; gloo's all-reduce may sum in another order
    lines = [json.loads(x) for x in (shared / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert [x["env_steps"] for x in lines] == [x["env_steps"] for x in want]  # written once
    assert lines[-1]["eval/learned/aulc"] == pytest.approx(want[-1]["eval/learned/aulc"], abs=1e-6)
    assert len(list((shared / "wandb").glob("offline-run-*"))) == 1  # one W&B run
    assert not (shared / ".lock").exists() and not list(Path(tmp_path).glob("runs"))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"coordinator_address": "127.0.0.1:1"}, "missing --num-processes, --process-id"),
        (
            {"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": 2},
            "--process-id must be in 0..1 for --num-processes 2, got 2",
        ),
        (
            {"coordinator_address": "localhost", "num_processes": 2, "process_id": 0},
            "give HOST:PORT",
        ),
    ],
)
def test_incomplete_process_settings_name_the_missing_flag(given, message, monkeypatch):
    for var in (*distributed.ENV_VARS.values(), "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=message):
        distributed.settings_from(**given)


def test_process_settings_come_from_the_environment_or_a_cluster(monkeypatch):
    for var in (*distributed.ENV_VARS.values(), "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.settings_from() is None  # one process
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.settings_from() == {}  # JAX detects Slurm itself
    monkeypatch.setenv("METAAL_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("METAAL_NUM_PROCESSES", "2")
    monkeypatch.setenv("METAAL_PROCESS_ID", "1")
    assert distributed.settings_from() == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 2,
        "process_id": 1,
    }
