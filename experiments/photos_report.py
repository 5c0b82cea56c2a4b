"""The photos table in Markdown: per photo, and the means per method.

Flag-free, so that ``experiments.readme`` renders the README's block from
``experiments.photos``'s JSON without importing the command.
"""

from __future__ import annotations

import numpy as np

METHODS = ("dncf", "dncf_tiles", "G", "tv", "tv_oracle", "cbm3d", "bicubic",
           "backprojection", "biharmonic")


def _mean(records: list[dict]) -> dict:
  """PSNR, SSIM and seconds averaged over ``records``."""
  return {k: float(np.mean([r[k] for r in records]))
          for k in ("psnr", "ssim", "seconds")}


def _name(method: str) -> str:
  return f"{method} (ORACLE)" if method == "tv_oracle" else method


def table(records: list[dict], tasks: list[str], methods: list[str]) -> str:
  """Markdown: per task, a row per photo and the mean; PSNR / SSIM / s."""
  lines = []
  for task in tasks:
    rows = [r for r in records if r["task"] == task]
    names = [m for m in methods if any(r["method"] == m for r in rows)]
    if not rows:
      continue
    lines += [f"### {task}", "", "| photo | " + " | ".join(map(_name, names)) + " |",
              "|---" * (len(names) + 1) + "|"]
    photos = sorted({r["photo"] for r in rows}, key=lambda p: int(p.split(":")[0]))
    cell = lambda r: (f"{r['psnr']:.2f} / {r['ssim']:.3f} / {r['seconds']:.0f}"
                      if r else "")
    for p in photos + ["mean"]:
      out = []
      for m in names:
        sel = [r for r in rows if r["method"] == m and (p == "mean" or r["photo"] == p)]
        if p == "mean" and sel:
          sel = [_mean(sel)]
        out.append(cell(sel[0] if sel else None))
      lines.append(f"| {p} | " + " | ".join(out) + " |")
    lines.append("")
  return "\n".join(lines + ["PSNR (dB) / SSIM / seconds per photo. ORACLE: "
                            "chosen with the ground truth."])


def summary(records: list[dict], tasks: list[str], methods: list[str]) -> str:
  """Markdown: per task and method, the mean over the photos (PSNR, SSIM,
  seconds per photo) and how many photos."""
  lines = ["| task | method | PSNR (dB) | SSIM | s/photo | photos |",
           "|---|---|---|---|---|---|"]
  for task in tasks:
    for m in methods:
      sel = [r for r in records if r["task"] == task and r["method"] == m]
      if sel:
        mean = _mean(sel)
        lines.append(f"| {task} | {_name(m)} | {mean['psnr']:.2f} | "
                     f"{mean['ssim']:.3f} | {mean['seconds']:.0f} | {len(sel)} |")
  return "\n".join(lines)
