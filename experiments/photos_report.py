"""The photos table in Markdown: per photo, and the means per method.

Flag-free, so that ``experiments.readme`` renders the README's block from
``experiments.photos``'s JSON without importing the command.
"""

from __future__ import annotations

import numpy as np

METHODS = ("dncf", "dncf_tiles", "G", "tv", "tv_oracle", "cbm3d", "bicubic",
           "biharmonic")


def table(records: list[dict], tasks: list[str], methods: list[str]) -> str:
  """Markdown: per task, a row per photo and the mean; PSNR / SSIM / s."""
  lines = []
  for task in tasks:
    rows = [r for r in records if r["task"] == task]
    names = [m for m in methods if any(r["method"] == m for r in rows)]
    if not rows:
      continue
    head = [f"{m} (ORACLE)" if m == "tv_oracle" else m for m in names]
    lines += [f"### {task}", "", "| photo | " + " | ".join(head) + " |",
              "|---" * (len(names) + 1) + "|"]
    photos = sorted({r["photo"] for r in rows}, key=lambda p: int(p.split(":")[0]))
    cell = lambda r: (f"{r['psnr']:.2f} / {r['ssim']:.3f} / {r['seconds']:.0f}"
                      if r else "")
    for p in photos + ["mean"]:
      out = []
      for m in names:
        sel = [r for r in rows if r["method"] == m and (p == "mean" or r["photo"] == p)]
        if p == "mean" and sel:
          sel = [dict(psnr=np.mean([r["psnr"] for r in sel]),
                      ssim=np.mean([r["ssim"] for r in sel]),
                      seconds=np.mean([r["seconds"] for r in sel]))]
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
        name = f"{m} (ORACLE)" if m == "tv_oracle" else m
        lines.append(
            f"| {task} | {name} | {np.mean([r['psnr'] for r in sel]):.2f} | "
            f"{np.mean([r['ssim'] for r in sel]):.3f} | "
            f"{np.mean([r['seconds'] for r in sel]):.0f} | {len(sel)} |")
  return "\n".join(lines)
