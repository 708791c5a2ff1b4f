"""Episodes shared over several devices give the same numbers as on one (this small config).

At larger sizes XLA's code for another per-call batch size can flip a near-tie,
so figures agree only up to that (README); this test pins the small case.

Run in a subprocess with two forced host devices
(`--xla_force_host_platform_device_count=2`): the device count is fixed when
JAX starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
import jax, numpy as np
from metaal.experiments.evaluate import evaluate, episode_mesh
assert len(jax.devices()) == 2, jax.devices()
out = {}
for devices in (1, 2):
    # 7 episodes in chunks of 4: the last chunk and the odd count are padded on 2 devices
    frame = evaluate(["sklearn/iris", "keel/wine"], ["margin", "coreset"], seeds=[0, 1, 2, 5],
                     budget=8, out_dir=None, progress=False, max_envs=3, devices=devices)
    out[devices] = frame["test_accuracy"].astype(np.float32).tolist()
try:
    episode_mesh(3)
except ValueError as err:
    out["error"] = str(err)
print(json.dumps(out))
"""


def test_two_devices_give_the_one_device_results_bit_for_bit():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["1"]) == 2 * 2 * 4 * 9  # data sets x strategies x seeds x (budget + 1)
    assert out["1"] == out["2"]
    assert "--devices 3: this process sees 2 device(s) (cpu); choose 1..2" in out["error"]
