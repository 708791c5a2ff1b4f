"""`metaal datasets`: every suite with rows, features, classes and minority share."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from metaal.experiments import outputs


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Options of `metaal datasets`."""
    parser.add_argument(
        "--suite",
        action="append",
        help="suite(s) to list, repeatable, e.g. synthetic (default: train and heldout)",
    )


@outputs.command("datasets")
def main(args: argparse.Namespace) -> int:
    """Print one line per dataset of the chosen suites."""
    from metaal.data import describe_suites

    rows = describe_suites(tuple(args.suite or ("train", "heldout")))
    header = (
        f"{'suite':<10} {'dataset':<32} {'rows':>6} {'feats':>5} {'classes':>7} {'minority':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['suite']:<10} {r['dataset']:<32} {r['rows']:>6} {r['features']:>5} "
            f"{r['classes']:>7} {r['minority_share']:>8.3f}"
        )
    return 0
