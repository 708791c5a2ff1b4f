"""Candidate-scoring networks for the agents.

The network itself lives in `metaal.policy_net` so that a saved policy can be
rebuilt inside `metaal` (which imports no agent code); it is re-exported here
for the agents.
"""

from metaal.policy_net import NEG_INF, CandidateScorer

__all__ = ["NEG_INF", "CandidateScorer"]
