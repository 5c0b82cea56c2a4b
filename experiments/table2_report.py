"""Table 2's aggregation (mean ± std over seeds), Markdown and figures.

Takes the run records and arrays of :mod:`experiments.table2_runs`;
writes only where it is told to.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np

from experiments.table2_runs import (DETERMINISTIC, FIGURE_ONLY, ITERATIVE,
                                     METHOD_NAMES, Profile, applies)

METRICS = ("psnr", "oracle_psnr", "mse", "ssim", "seconds", "iterations")
PANEL_METHODS = ("tv", "dip", "deepred", "dncf")


def jsonable(x):
  """``x`` as plain JSON types (numpy scalars become floats)."""
  return json.loads(json.dumps(x, default=float))


def write_json(path: str, payload: dict) -> None:
  """Writes ``payload`` atomically (a temporary file, then a rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, default=float)
  os.replace(tmp, path)


def load_previous(path: str, profile: str) -> dict:
  """The runs of an earlier invocation (``--resume``), by key; {} if none."""
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    old = json.load(f)
  if old.get("profile") != profile:
    raise ValueError(f"{path} holds profile {old.get('profile')!r}, not "
                     f"{profile!r}")
  return old.get("runs", {})


def describe(rec: dict) -> str:
  """One line for a run record: PSNR, oracle, MSE, iterations, seconds."""
  parts = []
  if rec.get("psnr") is not None:
    parts.append(f"PSNR {rec['psnr']:.2f} dB")
  if rec.get("oracle_psnr") is not None:
    parts.append(f"oracle {rec['oracle_psnr']:.2f}")
  if rec.get("mse") is not None:
    parts.append(f"MSE {rec['mse']:.2e}")
  if rec.get("iterations") is not None:
    parts.append(f"{rec['iterations']} its")
  parts.append(f"{rec['seconds']:.1f} s")
  return ", ".join(parts)


def _stats(values: list) -> Optional[dict]:
  vals = [float(v) for v in values if v is not None]
  if not vals:
    return None
  return dict(mean=float(np.mean(vals)), std=float(np.std(vals)), n=len(vals))


def aggregate(runs: list[dict]) -> dict:
  """One cell from its per-seed records: mean, std and n of every metric."""
  cell = {m: _stats([r.get(m) for r in runs]) for m in METRICS}
  cell["seeds"] = sorted(r["seed"] for r in runs)
  return cell


def _fmt(s: Optional[dict], fmt: str, unit: str = "",
         zero_std: bool = True) -> str:
  """``mean ± std`` (no ``±`` for one run, or a zero std unless ``zero_std``)."""
  if s is None:
    return "-"
  text = format(s["mean"], fmt)
  if s["n"] > 1 and (zero_std or s["std"] > 0):
    text += " ± " + format(s["std"], fmt)
  return text + unit


def cell_text(cell: dict, method: str, asked: int = 1) -> str:
  """The Markdown of one cell (``<br>`` between lines); ``asked`` = seeds the
  table asks for, so that a stochastic cell with fewer says "1 of 3 seeds"."""
  lines = []
  if cell["psnr"] is not None:
    psnr = _fmt(cell["psnr"], ".2f", " dB")
    if cell["oracle_psnr"] is not None:
      psnr += f" (oracle {_fmt(cell['oracle_psnr'], '.2f')})"
    lines += [psnr, f"SSIM {_fmt(cell['ssim'], '.3f')}"]
  lines.append(f"MSE {_fmt(cell['mse'], '.2e')}")
  its = cell["iterations"]
  time_line = _fmt(cell["seconds"], ".1f", " s")
  if its is not None:
    time_line += f", {_fmt(its, '.0f', zero_std=False)} its"
  lines.append(time_line)
  n = len(cell["seeds"])
  if method not in DETERMINISTIC and n < asked:
    lines.append(f"{n} of {asked} seeds")
  elif n > 1:
    lines.append(f"{n} seeds")
  return "<br>".join(lines)


def header_lines(prof: Profile, settings: dict) -> list[str]:
  """What the reader must know before the numbers."""
  width = ("the notebooks' 128 channels" if prof.net_channels is None else
           f"{prof.net_channels} channels, not the notebook's 128")
  return [
      f"Profile `{prof.name}`; inputs and DNCF settings of "
      f"`experiments/configs/<task>_{prof.flagfiles}.flags`.",
      f"DIP and DeepRED+TV: {width}; the notebooks' iteration budgets. "
      "'its' = iterations run (DNCF stops early on noisy tasks).",
      "Each cell: PSNR of what the method returns (blind) and, in brackets, "
      "the ORACLE: the best PSNR met along the run (DIP, DeepRED, DNCF: best "
      "candidate at any checkpoint; TV: best weight of the grid), which needs "
      "the ground truth and is not what the method returns.",
      "TV: weight chosen blind by the discrepancy principle (noiseless tasks: "
      "the smallest weight of the grid).",
      "flash: no ground truth; MSE to the no-flash image.",
      "Mean ± std over seeds " + ", ".join(str(s) for s in settings["seeds"])
      + " (TV and bicubic are deterministic: one run; a cell run for fewer "
      "seeds says how many). Seconds: wall time including compilation.",
  ]


def markdown(prof: Profile, settings: dict, cells: dict, tasks: list[str],
             methods: list[str]) -> str:
  """Rows = tasks, columns = methods ("n/a": the method does not apply;
  "not run yet": a cell the JSON does not hold, e.g. an unfinished table)."""
  out = [f"# Table 2 ({prof.name})", ""]
  out += [f"- {line}" for line in header_lines(prof, settings)]
  out += ["", "| task | " + " | ".join(METHOD_NAMES[m] for m in methods) + " |",
          "|---" * (len(methods) + 1) + "|"]
  for task in tasks:
    if task in FIGURE_ONLY:
      continue
    row = [cell_text(cells[task][m], m, len(settings["seeds"]))
           if m in cells.get(task, {}) else
           "not run yet" if applies(m, task) else "n/a" for m in methods]
    out.append(f"| {task} | " + " | ".join(row) + " |")
  if any(t in FIGURE_ONLY for t in tasks):
    out += ["", "vase (object removal): no ground truth, figure only."]
  out += ["", f"Command: `{settings['command']}`", ""]
  return "\n".join(out)


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _caption(method: str, rec: dict) -> str:
  text = f"{METHOD_NAMES[method]}\n{rec['seconds']:.1f} s"
  if rec.get("psnr") is not None:
    text += f", {rec['psnr']:.2f} dB"
  elif rec.get("mse") is not None:
    text += f", MSE {rec['mse']:.1e}"
  return text


def panel_figure(path: str, task: str, inputs: dict,
                 images: dict[str, tuple[np.ndarray, dict]]) -> None:
  """observation | TV | DIP | DeepRED+TV | DNCF (| ground truth), times in captions."""
  plt = _plt()
  tiles = [("observation", inputs["observation"])]
  tiles += [(_caption(m, images[m][1]), images[m][0])
            for m in PANEL_METHODS if m in images]
  if "ground_truth" in inputs:
    tiles.append(("ground truth", inputs["ground_truth"]))
  fig, axes = plt.subplots(1, len(tiles), figsize=(2.6 * len(tiles), 3.0),
                           squeeze=False)
  for ax, (title, im) in zip(axes[0], tiles):
    ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
  fig.suptitle(task, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def transition_figure(path: str, flash: np.ndarray, iterations: np.ndarray,
                      images: np.ndarray, noflash: np.ndarray) -> None:
  """Figure 5: the flash input, DNCF's f(y) every few iterations, the no-flash input."""
  plt = _plt()
  tiles = [("flash (input)", flash)]
  tiles += [(f"f(y), it. {int(i)}", im) for i, im in zip(iterations, images)]
  tiles.append(("no-flash (input)", noflash))
  fig, axes = plt.subplots(1, len(tiles), figsize=(2.2 * len(tiles), 2.6),
                           squeeze=False)
  for ax, (title, im) in zip(axes[0], tiles):
    ax.imshow(np.clip(im, 0, 1))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def convergence_figure(path: str, task: str,
                       curves: dict[str, np.ndarray]) -> bool:
  """Oracle PSNR (best candidate per checkpoint) against wall seconds.

  Returns False (and writes nothing) when no curve has a point.
  """
  curves = {m: c for m, c in curves.items() if len(c)}
  if not curves:
    return False
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for m in ITERATIVE:
    if m in curves:
      ax.plot(curves[m][:, 0], curves[m][:, 1], marker=".",
              label=METHOD_NAMES[m])
  ax.set_xlabel("wall seconds (compilation included)")
  ax.set_ylabel("ORACLE PSNR (dB), best candidate")
  ax.set_title(task)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def all_finite(cells: dict) -> bool:
  """Every aggregated number is finite (for checks)."""
  for by_method in cells.values():
    for cell in by_method.values():
      for m in METRICS:
        s = cell[m]
        if s is not None and not all(math.isfinite(s[k]) for k in ("mean", "std")):
          return False
  return True


def figure_paths(fig_dir: str, profile_name: str, task: str) -> dict[str, str]:
  stem = os.path.join(fig_dir, f"table2_{profile_name}_{task}")
  return dict(panel=f"{stem}_panel.png", convergence=f"{stem}_convergence.png",
              transition=f"{stem}_transition.png")
