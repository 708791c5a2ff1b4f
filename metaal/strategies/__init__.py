"""Query strategies of every family behind one interface (`Strategy`), and a registry by name.

    from metaal.strategies import get_strategy
    margin = get_strategy("margin")

`STRATEGIES` maps each name to its `Strategy`; `HEURISTICS` lists the
deployable heuristics, the default baselines of an evaluation. Learned
policies are `metaal.strategies.learned.LearnedStrategy`; any strategy
answers scikit-activeml's `query` through `metaal.strategies.adapter`.
"""

from metaal.strategies.base import Context, Strategy, initial_memory, select
from metaal.strategies.distribution import CORESET, DENSITY, PROBCOVER, TYPICLUST
from metaal.strategies.hybrid import ALBL, BADGE, DROPQUERY, INFO_DENSITY
from metaal.strategies.lookahead import EER, EMOC
from metaal.strategies.reference import ORACLE, RANDOM
from metaal.strategies.uncertainty import BALD, EGL, ENTROPY, LEAST_CONFIDENCE, MARGIN

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        ENTROPY,
        MARGIN,
        LEAST_CONFIDENCE,
        BALD,
        EGL,
        EER,
        EMOC,
        CORESET,
        DENSITY,
        TYPICLUST,
        PROBCOVER,
        INFO_DENSITY,
        BADGE,
        DROPQUERY,
        ALBL,
        RANDOM,
        ORACLE,
    )
}

#: Names of the deployable heuristics (everything but the oracle), in registry order.
HEURISTICS: tuple[str, ...] = tuple(n for n, s in STRATEGIES.items() if s.deployable)


def get_strategy(name: str) -> Strategy:
    """The registered strategy called `name`; a ValueError lists the known names otherwise."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


__all__ = [
    "HEURISTICS",
    "STRATEGIES",
    "Context",
    "Strategy",
    "get_strategy",
    "initial_memory",
    "select",
]
