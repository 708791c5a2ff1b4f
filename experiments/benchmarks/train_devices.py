"""`metaal train` throughput with its env slots on 1 and on 2 host devices (same run).

Both runs are fresh processes with two forced host devices
(`--xla_force_host_platform_device_count=2`), `--devices 1` and `--devices 2`,
the compilation cache off and no periodic evaluation: the `demo` preset of
the agent with `--total-steps` env steps. The figure is the median of the
chunks' `charts/SPS` (env steps per second of training, compile excluded) in
the run's metrics.jsonl, after the first chunk; the wall time of the whole
command is printed beside it.

    python -m metaal.experiments.benchmarks.train_devices [--agent ppo] [--total-steps 102400]

The last line is `devices_1_sps=<x> devices_2_sps=<x> speedup=<x>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(devices: int, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """(median env steps/s after the first chunk, wall seconds) of `metaal train`."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    command = [sys.executable, "-m", "metaal.experiments.cli", "train", "--agent", args.agent]
    command += ["--preset", "demo", "--total-steps", str(args.total_steps), "--eval-tasks", "0"]
    command += ["--devices", str(devices), "--out", str(out), "--quiet"]
    command += ["--wandb-mode", "disabled", "--compile-cache", "off"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [x["charts/SPS"] for x in lines[1:]] or [lines[0]["charts/SPS"]]
    return float(np.median(rates)), wall


def main(argv: list[str] | None = None) -> None:
    """Train on 1 and 2 devices; print the throughputs and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="ppo", choices=("ppo", "dqn"))
    parser.add_argument("--total-steps", type=int, default=102400)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, 2):
            rates[devices], wall = run(devices, args, Path(tmp) / f"devices{devices}")
            print(f"{devices} device(s): {rates[devices]:.0f} env steps/s, {wall:.1f} s in all")
    print(f"load average after the run {os.getloadavg()}")
    print(
        f"devices_1_sps={rates[1]:.0f} devices_2_sps={rates[2]:.0f} "
        f"speedup={rates[2] / rates[1]:.2f}"
    )


if __name__ == "__main__":
    main()
