"""dncf-jax: Deep Nonparametric Convexified Filtering (arXiv 2309.06724) in JAX."""

from importlib import metadata as _metadata

from dncf_jax import (attacks, classifiers, config, convex_nets, defense,
                      defense_baselines, engine, filters, io, metrics, nets,
                      penalty, physics, quasi_newton, select, solver,
                      tiles, toy_data)
from dncf_jax.config import (DNCFConfig, NetConfig, PenaltyConfig,
                             SelectConfig, YSolverConfig)
from dncf_jax.engine import Result
from dncf_jax.solver import restore, restore_batch

try:
  __version__ = _metadata.version("dncf-jax")
except _metadata.PackageNotFoundError:  # a checkout that is not installed
  __version__ = "0.1.0"

__all__ = ["DNCFConfig", "NetConfig", "PenaltyConfig", "Result",
           "SelectConfig", "YSolverConfig", "__version__", "attacks",
           "classifiers", "config", "convex_nets", "defense",
           "defense_baselines", "engine", "filters", "io", "metrics", "nets",
           "penalty", "physics", "quasi_newton", "restore", "restore_batch",
           "select", "solver", "tiles", "toy_data"]
