"""The photos table in Markdown: per photo, and the means per method;
the ORACLE score of DNCF's fused answers at other fusion weights.

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
    lines += _curve_line(rows)
  return "\n".join(lines + ["PSNR (dB) / SSIM / seconds per photo. ORACLE: "
                            "chosen with the ground truth; best along the way: "
                            "the best checkpoint of the run (PSNR; DNCF's "
                            "before any fusion with a classical denoiser)."])


# The weights of the ORACLE fusion curve below the denoising tables.
CURVE_WEIGHTS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


def fusion_terms(fused: np.ndarray, weight: float, partner: np.ndarray,
                 truth: np.ndarray) -> dict:
  """ORACLE (the ground truth): the mean squared errors of DNCF's own
  answer ``a`` (recovered from ``fused = (1 - w) a + w partner``, ``w`` <
  1) and of the partner, and the mean product of the two errors; the MSE
  at any weight ``v`` follows: ``(1-v)^2 own + v^2 partner + 2 v (1-v)
  cross`` (:func:`fusion_curve`)."""
  own = (np.asarray(fused, np.float64) - weight * partner) / (1 - weight)
  e_own, e_partner = own - truth, np.asarray(partner, np.float64) - truth
  return dict(own_mse=float(np.mean(e_own ** 2)),
              partner_mse=float(np.mean(e_partner ** 2)),
              cross_mse=float(np.mean(e_own * e_partner)))


def fusion_curve(records: list[dict], weights=CURVE_WEIGHTS) -> list[float]:
  """The mean PSNR over ``records`` (with :func:`fusion_terms`) had each
  been fused at each of ``weights`` instead (ORACLE)."""
  v = np.asarray(weights, np.float64)[:, None]
  terms = {k: np.array([r[k] for r in records])
           for k in ("own_mse", "partner_mse", "cross_mse")}
  mse = ((1 - v) ** 2 * terms["own_mse"] + v ** 2 * terms["partner_mse"]
         + 2 * v * (1 - v) * terms["cross_mse"])
  return list(np.mean(10 * np.log10(1 / np.maximum(mse, 1e-12)), axis=1))


def _curve_line(rows: list[dict]) -> list[str]:
  """The line under a denoising table: the fused runs' mean PSNR at other
  weights (ORACLE), where the records hold :func:`fusion_terms`."""
  fused = [r for r in rows if "own_mse" in r]
  if not fused:
    return []
  cells = ", ".join(f"{w:g}: {p:.2f}" for w, p in
                    zip(CURVE_WEIGHTS, fusion_curve(fused)))
  return [f"Fusion weight of the classical denoiser, ORACLE (mean PSNR of "
          f"the same {len(fused)} run(s) at other weights; 0: DNCF alone, "
          f"1: the denoiser alone): {cells}", ""]


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
