"""Query strategies of every family behind one interface (`Strategy`), and a registry by name."""

from metaal.strategies.base import Context, Strategy, select

__all__ = ["Context", "Strategy", "select"]
