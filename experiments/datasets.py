"""`metaal datasets`: every suite with encoder, rows, features, classes and minority share."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from metaal.experiments import outputs

#: What `metaal datasets` lists without --suite.
DEFAULT_SUITES = ("train", "heldout", "fm-train", "fm-heldout")


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Options of `metaal datasets`."""
    parser.add_argument(
        "--suite",
        action="append",
        help=f"suite(s) to list, repeatable (default: {', '.join(DEFAULT_SUITES)}); e.g. synthetic",
    )


@outputs.command("datasets")
def main(args: argparse.Namespace) -> int:
    """Print one line per dataset of the chosen suites."""
    from metaal.data import describe_suites
    from metaal.data.fm import cache_dir

    rows = describe_suites(tuple(args.suite or DEFAULT_SUITES))
    header = (
        f"{'suite':<10} {'dataset':<32} {'encoder':<18} {'rows':>6} {'feats':>5} "
        f"{'classes':>7} {'minority':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['suite']:<10} {r['dataset']:<32} {r['encoder'] or '-':<18} {r['rows']:>6} "
            f"{r['features']:>5} {r['classes']:>7} {r['minority_share']:>8.3f}"
        )
    if any(r["encoder"] for r in rows):
        print(
            f"fm/ tasks: sizes as recorded in metaal.data.fm (nothing is embedded to list them); "
            f"embedded on first use, cached in {cache_dir()} (set METAAL_CACHE to move it)"
        )
    return 0
