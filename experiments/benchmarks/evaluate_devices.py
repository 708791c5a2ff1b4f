"""`metaal evaluate` on the held-out suite with its episodes on 1 and on 2 host devices (same run).

Both runs are fresh processes with two forced host devices
(`--xla_force_host_platform_device_count=2`), `--devices 1` and `--devices 2`,
and the compilation cache off, so each pays its own compiles. The figure is
the evaluation's own time (`elapsed_seconds` in its config.json: data loaded,
runners compiled and run), and the check is that both wrote the same results.

    python -m metaal.experiments.benchmarks.evaluate_devices [--strategies margin,random,badge]

The last line is `devices_1_s=<s> devices_2_s=<s> speedup=<x> identical=<bool>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd


def run(devices: int, args: argparse.Namespace, out: Path) -> float:
    """`metaal evaluate` on `devices` of 2 host devices; its elapsed seconds."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    command = [sys.executable, "-m", "metaal.experiments.cli", "evaluate", "--suite", args.suite]
    command += ["--strategies", args.strategies, "--seeds", str(args.seeds)]
    command += ["--budget", str(args.budget), "--devices", str(devices), "--out", str(out)]
    command += ["--wandb-mode", "disabled", "--compile-cache", "off"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return float(json.loads((out / "config.json").read_text())["elapsed_seconds"])


def main(argv: list[str] | None = None) -> None:
    """Run the evaluation on 1 and 2 devices; print the times, the ratio and the check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="heldout")
    parser.add_argument("--strategies", default="margin,random,badge")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        times, results = {}, {}
        for devices in (1, 2):
            out = Path(tmp) / f"devices{devices}"
            times[devices] = run(devices, args, out)
            results[devices] = pd.read_csv(out / "results.csv")
            print(f"{devices} device(s): {times[devices]:.1f} s", flush=True)
        identical = results[1].equals(results[2])
    print(f"load average after the run {os.getloadavg()}")
    print(
        f"devices_1_s={times[1]:.1f} devices_2_s={times[2]:.1f} "
        f"speedup={times[1] / times[2]:.2f} identical={identical}"
    )


if __name__ == "__main__":
    main()
