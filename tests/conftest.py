"""Test-session settings: a private compilation cache, and a bound on live compiled code.

- The tests never read or write the user's JAX compilation cache: the session's cache
  is a fresh temporary folder (`METAAL_COMPILE_CACHE`, inherited by the `metaal`
  subprocesses the tests start, and turned on in this process), removed at the end.
  Many tests train the same tiny configs in new closures, which the in-memory jit
  caches cannot share but the persistent cache, keyed by the program, does. A cached
  executable is the one the compile would produce, so no result depends on it.
- Every executable XLA compiles on the CPU keeps about six memory mappings until its jit
  cache entry dies, and the module-level caches of compiled envs and runners keep them
  for the whole session. One pytest process compiles thousands of programs, and once the
  process passes the kernel's `vm.max_map_count` (65,530 by default) an mmap inside XLA's
  compiler fails and the process dies (a segfault or abort, late in a full run, in
  whichever test compiled then). After a test module that leaves the process above
  `MAX_MAPPINGS`, the jit caches are cleared: later modules recompile what they need.
"""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile
from collections.abc import Iterator

import jax
import pytest

from metaal import compile_cache

SESSION_CACHE = tempfile.mkdtemp(prefix="metaal-test-jax-cache-")
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)
os.environ[compile_cache.ENV_VAR] = SESSION_CACHE
compile_cache.enable()

#: Mappings above which a finished module's compiled code is dropped: one module has
#: added up to about 15,000, which stays well below 65,530.
MAX_MAPPINGS = 30_000


def memory_mappings() -> int:
    """How many memory mappings this process holds (lines of /proc/self/maps; 0 elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 0


@pytest.fixture(autouse=True, scope="module")
def bounded_compiled_code() -> Iterator[None]:
    """After each test module, clear JAX's caches if the process holds too many mappings."""
    yield
    if memory_mappings() > MAX_MAPPINGS:
        jax.clear_caches()
        gc.collect()
