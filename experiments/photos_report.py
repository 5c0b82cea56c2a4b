"""The photos table in Markdown: per photo, and the means per method.

Flag-free, so that ``experiments.readme`` renders the README's block from
``experiments.photos``'s JSON without importing the command.
"""

from __future__ import annotations

import numpy as np

METHODS = ("dncf", "dncf_tiles", "G", "tv", "tv_oracle", "nlm", "wavelet",
           "nlm_wavelet", "cbm3d", "bicubic", "backprojection", "biharmonic",
           "dip")
DIP_CHANNELS = 128   # the DIP notebooks' width


def _mean(records: list[dict]) -> dict:
  """PSNR, SSIM and seconds averaged over ``records``."""
  return {k: float(np.mean([r[k] for r in records]))
          for k in ("psnr", "ssim", "seconds")}


def label(r: dict) -> str:
  """The name of a record's column: ORACLE methods, DIP at another width
  than the notebooks' and DNCF averaged with a classical denoiser say so."""
  m = r["method"]
  if m == "tv_oracle":
    return f"{m} (ORACLE)"
  if r.get("channels", DIP_CHANNELS) != DIP_CHANNELS:
    return f"{m} ({r['channels']} channels)"
  if r.get("fused"):
    return f"{m} + {r.get('fused_with', 'nlm')} ({r['fused']:g})"
  return m


def _labels(records: list[dict], methods: list[str]) -> list[str]:
  """The columns of ``methods``' records, in ``methods``' order."""
  return list(dict.fromkeys(label(r) for m in methods for r in records
                            if r["method"] == m))


def table(records: list[dict], tasks: list[str], methods: list[str]) -> str:
  """Markdown: per task, a row per photo and the mean; PSNR / SSIM / s,
  and beside them the ORACLE best checkpoint of the runs that have one."""
  lines = []
  for task in tasks:
    rows = [r for r in records if r["task"] == task]
    names = _labels(rows, methods)
    if not rows:
      continue
    oracles = [n for n in names
               if any(label(r) == n and "oracle_psnr" in r for r in rows)]
    heads = names + [f"{n} best along the way (ORACLE)" for n in oracles]
    lines += [f"### {task}", "", "| photo | " + " | ".join(heads) + " |",
              "|---" * (len(heads) + 1) + "|"]
    photos = sorted({r["photo"] for r in rows}, key=lambda p: int(p.split(":")[0]))
    cell = lambda r: (f"{r['psnr']:.2f} / {r['ssim']:.3f} / {r['seconds']:.0f}"
                      if r else "")
    for p in photos + ["mean"]:
      mine = [r for r in rows if p == "mean" or r["photo"] == p]
      out = []
      for n in names:
        sel = [r for r in mine if label(r) == n]
        out.append(cell(_mean(sel) if sel else None))
      for n in oracles:
        sel = [r["oracle_psnr"] for r in mine
               if label(r) == n and "oracle_psnr" in r]
        out.append(f"{np.mean(sel):.2f}" if sel else "")
      lines.append(f"| {p} | " + " | ".join(out) + " |")
    lines.append("")
  return "\n".join(lines + ["PSNR (dB) / SSIM / seconds per photo. ORACLE: "
                            "chosen with the ground truth; best along the way: "
                            "the best checkpoint of the run (PSNR; DNCF's "
                            "before any fusion with a classical denoiser)."])


def summary(records: list[dict], tasks: list[str], methods: list[str]) -> str:
  """Markdown: per task and method, the mean over the photos (PSNR, SSIM,
  seconds per photo) and how many photos."""
  lines = ["| task | method | PSNR (dB) | SSIM | s/photo | photos |",
           "|---|---|---|---|---|---|"]
  for task in tasks:
    rows = [r for r in records if r["task"] == task]
    for n in _labels(rows, methods):
      sel = [r for r in rows if label(r) == n]
      mean = _mean(sel)
      lines.append(f"| {task} | {n} | {mean['psnr']:.2f} | "
                   f"{mean['ssim']:.3f} | {mean['seconds']:.0f} | {len(sel)} |")
  return "\n".join(lines)
