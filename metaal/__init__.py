"""metaal: meta-learning active-learning query strategies with JAX."""
