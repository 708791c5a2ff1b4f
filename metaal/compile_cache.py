"""JAX's persistent compilation cache: on by default for the `metaal` commands.

Compilation dominates many metaal jobs (an env reset, one runner per strategy
and data set shape), and the same programs compile again in every process.
JAX's persistent cache keeps the compiled executables on disk, keyed by the
program, the JAX / XLA version, the device and the compile options, so a
repeated command loads them instead of compiling. The results do not change:
a cached executable is the same one a compile would produce.

The folder is, in order: the command's `--compile-cache DIR`, the environment
variable `METAAL_COMPILE_CACHE` (a folder), JAX's own setting
(`JAX_COMPILATION_CACHE_DIR`) if you made one, or `~/.cache/metaal/jax` (under
`$XDG_CACHE_HOME` if set). From Python, call `metaal.compile_cache.enable()`
before the first compilation. `--compile-cache off` or `METAAL_COMPILE_CACHE=off`
turns it off. The cache is trusted code (JAX's own warning): do not point it at
a folder others can write to.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "METAAL_COMPILE_CACHE"
OFF = ("off", "0", "false", "none")
#: compiles shorter than this are not written (JAX's default is 1 s)
MIN_COMPILE_SECONDS = 0.5


def default_folder() -> Path:
    """`~/.cache/metaal/jax`, or `$XDG_CACHE_HOME/metaal/jax`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metaal" / "jax"


def resolve(setting: str | None = None) -> Path | None:
    """The cache folder for `setting` (a flag value; None: the environment's), None if off."""
    value = setting if setting is not None else os.environ.get(ENV_VAR)
    if value is None or value == "":
        return default_folder()
    if value.strip().lower() in OFF:
        return None
    return Path(value).expanduser()


def enable(setting: str | None = None) -> Path | None:
    """Turn the persistent cache on in the folder `resolve(setting)` names; returns it.

    Call before the first compilation. A folder that cannot be created is an
    error naming it and the way to turn the cache off.
    """
    import jax

    if setting is None and not os.environ.get(ENV_VAR) and jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)  # the user's own JAX setting wins
    folder = resolve(setting)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"--compile-cache {folder}: cannot create the compilation cache folder ({err}); "
            f"choose another folder or turn the cache off with --compile-cache off "
            f"({ENV_VAR}=off)"
        ) from err
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
