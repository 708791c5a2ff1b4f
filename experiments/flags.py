"""Command-line flags generated from typed config dataclasses (CleanRL's habit, in argparse).

Every field of a config section becomes one flat flag, `--field-name`, whose
help is the field's docstring and whose default is the value the caller
gives (a preset's), so `--help` shows what a run would use. Values parse by
the field's type: int, float, str, bool (`true`/`false`), `tuple[int, ...]`
and `tuple[str, ...]` (comma-separated), and `X | None` (`none` for None).

    sections = {"env": env_config, "run": run_config}
    add_config_flags(parser, sections)
    args = parser.parse_args()
    env_config = apply_flags(args, sections)["env"]

`flat_config` is the inverse view: one `{flag name: value}` dict over the
sections, which is what W&B receives, so a W&B sweep agent can set any field
by flag.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Any

NONE = "none"


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal after each field)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def config_fields(config: Any, skip: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The dataclass fields of `config` that become flags (not nested configs, not `skip`)."""
    hints = typing.get_type_hints(type(config))
    return [
        f
        for f in dataclasses.fields(config)
        if f.name not in skip and not dataclasses.is_dataclass(hints[f.name])
    ]


def _parser_of(hint: Any, flag: str):
    """A function str -> value for the type hint `hint`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        inner = _parser_of(next(a for a in args if a is not type(None)), flag)
        return lambda text: None if text.strip().lower() == NONE else inner(text)
    if typing.get_origin(hint) is tuple:
        item = _parser_of(args[0], flag)
        return lambda text: tuple(item(t) for t in text.split(",") if t.strip())
    if hint is bool:

        def boolean(text: str) -> bool:
            if text.strip().lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"{flag} takes true or false, got {text!r}")
            return text.strip().lower() == "true"

        return boolean
    if hint in (int, float, str):

        def scalar(text: str):
            try:
                return hint(text)
            except ValueError as err:
                raise argparse.ArgumentTypeError(
                    f"{flag} takes a {hint.__name__}, got {text!r}"
                ) from err

        return scalar
    raise TypeError(f"no flag parser for the type {hint!r} of {flag}")


def _shown(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "(empty)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def flag_name(field: str) -> str:
    """The flag of a field: `--field-name`."""
    return "--" + field.replace("_", "-")


def add_config_flags(
    parser: argparse.ArgumentParser,
    sections: dict[str, Any],
    skip: tuple[str, ...] = (),
    titles: dict[str, str] | None = None,
) -> None:
    """One flag per field of every section's config; a flag not given leaves no attribute.

    (Not given cannot be a default of None: `--n-candidates none` must be able to set None.)
    """
    for section, config in sections.items():
        group = parser.add_argument_group((titles or {}).get(section, f"{section} settings"))
        hints = typing.get_type_hints(type(config))
        docs = field_docs(type(config))
        for f in config_fields(config, skip):
            flag = flag_name(f.name)
            value = getattr(config, f.name)
            group.add_argument(
                flag,
                dest=f"{section}.{f.name}",
                type=_parser_of(hints[f.name], flag),
                default=argparse.SUPPRESS,
                metavar=type(value).__name__.upper() if value is not None else "VALUE",
                help=f"{docs.get(f.name, '')} (default: {_shown(value)})".strip(),
            )


def given_flags(args: argparse.Namespace, sections: dict[str, Any]) -> list[str]:
    """The config flags set on the command line."""
    return [
        flag_name(dest.split(".", 1)[1])
        for dest in vars(args)
        if "." in dest and dest.split(".", 1)[0] in sections
    ]


def apply_flags(args: argparse.Namespace, sections: dict[str, Any]) -> dict[str, Any]:
    """Each section's config with the fields given on the command line replaced."""
    out = {}
    for section, config in sections.items():
        changes = {
            dest.split(".", 1)[1]: value
            for dest, value in vars(args).items()
            if dest.startswith(section + ".")
        }
        with in_flag_terms({name: flag_name(name) for name in changes}):
            out[section] = dataclasses.replace(config, **changes) if changes else config
    return out


def flat_config(sections: dict[str, Any]) -> dict[str, Any]:
    """`{field: value}` over the sections' flag fields (tuples as lists), for W&B."""
    flat: dict[str, Any] = {}
    for config in sections.values():
        for f in config_fields(config):
            value = getattr(config, f.name)
            flat[f.name] = list(value) if isinstance(value, tuple) else value
    return flat


@contextlib.contextmanager
def in_flag_terms(names: dict[str, str]) -> Iterator[None]:
    """Re-raise a `ValueError` that starts with a field name in terms of the flag that sets it.

    `n_initial must be at least 1` becomes `--init must be at least 1` with
    `names={"n_initial": "--init"}`: command-line messages name flags.
    """
    try:
        yield
    except ValueError as err:
        message = str(err)
        field = message.split(" ", 1)[0]
        if field not in names:
            raise
        raise ValueError(names[field] + message[len(field) :]) from err
