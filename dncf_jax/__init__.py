"""dncf-jax: Deep Nonparametric Convexified Filtering (arXiv 2309.06724) in JAX."""

from dncf_jax import (attacks, classifiers, convex_nets, defense,
                      defense_baselines,
                      filters, metrics, nets, penalty, physics, select,
                      toy_data)
from dncf_jax.solver import DNCFConfig, Result, restore

__all__ = ["DNCFConfig", "Result", "restore", "attacks", "classifiers",
           "convex_nets", "defense", "defense_baselines", "filters", "metrics", "nets",
           "penalty", "physics", "select", "toy_data"]
