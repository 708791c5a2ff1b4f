"""Test-session settings: the tests never read or write the user's JAX compilation cache.

`metaal.experiments.cli.main` turns JAX's persistent cache on (`metaal.compile_cache`),
and several tests call it in-process or start `metaal` subprocesses. With the cache off
they compile what they run, as they did before the cache existed, and share no files
with other processes (a CI run beside a user's jobs on one machine).
"""

from __future__ import annotations

import os

os.environ["METAAL_COMPILE_CACHE"] = "off"  # inherited by the subprocesses the tests start
