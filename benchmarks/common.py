"""What the benchmarks share (no flags: each script defines its own)."""

from __future__ import annotations

import resource
import sys
import time
from typing import Optional

import numpy as np


def peak_rss_mb() -> float:
  """The process's peak resident set (MiB), as ``getrusage`` reports it."""
  kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / 1024.0 if sys.platform != "darwin" else kb / 2 ** 20


def recorder(t0: float):
  """A progress callback keeping (iteration, seconds since t0, best PSNR)."""
  rows: list[tuple[int, float, float]] = []

  def record(info: dict) -> None:
    rows.append((int(info["iteration"]), time.perf_counter() - t0,
                 max(info["psnr"].values())))

  return rows, record


def seconds_to(curve: np.ndarray, target: float) -> Optional[float]:
  """First time (column 1) at which the PSNR (column 2) reaches ``target``."""
  hit = np.nonzero(curve[:, 2] >= target - 1e-6)[0]
  return float(curve[hit[0], 1]) if hit.size else None


def iteration_to(curve: np.ndarray, target: float) -> Optional[int]:
  hit = np.nonzero(curve[:, 2] >= target - 1e-6)[0]
  return int(curve[hit[0], 0]) if hit.size else None
