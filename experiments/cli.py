"""The `metaal` command: one subcommand per user job.

    metaal datasets                 list suites and their datasets
    metaal train ...                meta-train a query policy (DQN, PPO, imitation)
    metaal sweep ...                a grid of hyper-parameters x seeds in one compiled program
    metaal evaluate ...             compare strategies on held-out datasets
    metaal query ...                pick the rows of your own data to annotate next
    metaal embed ...                embed your own texts or images with a pretrained encoder
    metaal demo [--quick]           train the default policy and evaluate it on `heldout`

The command lives in `experiments` (not `metaal`) because it drives every
layer, and `metaal` imports none of the others. Subcommand modules are
imported lazily so `metaal datasets` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from metaal import compile_cache

#: subcommand -> (module with add_arguments/main, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "datasets": (
        "metaal.experiments.datasets",
        "list the dataset suites with rows, features, classes",
    ),
    "train": ("metaal.experiments.train", "meta-train a query policy on a task suite"),
    "sweep": (
        "metaal.experiments.sweep",
        "train a grid of hyper-parameters x seeds as one vmapped program, scored on validation",
    ),
    "evaluate": ("metaal.experiments.evaluate", "evaluate strategies on held-out datasets"),
    "query": ("metaal.experiments.query", "pick the rows of your own data to annotate next"),
    "embed": (
        "metaal.experiments.embed",
        "embed your own texts (CSV) or images (a folder per class) into an NPZ",
    ),
    "demo": (
        "metaal.experiments.demo",
        "train the default policy and evaluate it on held-out data",
    ),
}


class DefaultsFormatter(argparse.HelpFormatter):
    """`--help` that ends every option's help with its default, unless the help already says it.

    (argparse's `ArgumentDefaultsHelpFormatter` would add a second, raw
    "(default: None)" to the options whose help explains their default.)
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        default = action.default
        shown = "none" if default is None or default == [] else default
        shown = "off" if shown is False else shown
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The top-level parser; only the chosen subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="metaal", description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=DefaultsFormatter
        )
        if name == chosen:
            importlib.import_module(module).add_arguments(p, argv)
        if name != "datasets":  # the commands that compile
            p.add_argument(
                "--compile-cache",
                metavar="DIR",
                help="JAX's persistent compilation cache folder, or 'off' (default: "
                f"${compile_cache.ENV_VAR}, else {compile_cache.default_folder()})",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `metaal` command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    if hasattr(args, "compile_cache"):
        try:
            compile_cache.enable(args.compile_cache)
        except ValueError as err:
            print(f"metaal {args.command}: error: {err}", file=sys.stderr)
            return 2
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
