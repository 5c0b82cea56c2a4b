"""Hand checks of the baselines on the cpu-small denoise input (BENCHMARKS.md).

    python -m experiments.baselines_check tv                 # TV weight sweep
    python -m experiments.baselines_check dip 32 400 25      # DIP, channels, its, ckpt
    python -m experiments.baselines_check deepred 32 400 25  # DeepRED + TV

Prints one line per weight / checkpoint (the PSNR columns are ORACLE:
they need the ground truth). Writes nothing.
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from dncf_jax import baselines as bl
from dncf_jax import io as dio
from dncf_jax import metrics, physics


def tv_sweep(obs, gt):
  from skimage.restoration import denoise_tv_chambolle
  grid = [0.04, 0.06, 0.07, 0.08, 0.09, 0.1, 0.12, 0.15]
  for w in grid:
    t = time.perf_counter()
    ours = np.asarray(bl.tv_denoise(obs, w))
    dt = time.perf_counter() - t
    ref = denoise_tv_chambolle(obs, weight=w, channel_axis=-1)
    print(f"weight {w:.3f}  jax {metrics.psnr(ours, gt):.2f} dB "
          f"skimage {metrics.psnr(ref, gt):.2f} dB  ({dt:.2f} s)")
  w, res = bl.tv_weight_discrepancy(obs, physics.Denoise(), grid, iters=20)
  out = bl.tv_restore(obs, physics.Denoise(), w, iters=20)
  print(f"blind (discrepancy, sigma estimated) weight {w}: "
        f"{metrics.psnr(out, gt):.2f} dB")


def net_run(kind, obs, gt, channels, iterations, every):
  if kind == "dip":
    cfg = bl.dip_config("denoise", channels=channels, iterations=iterations,
                        checkpoint_every=every)
    run = bl.dip_restore
  else:
    cfg = bl.deepred_config("denoise", channels=channels,
                            iterations=iterations, checkpoint_every=every,
                            denoiser_weight=0.02)
    run = bl.deepred_restore
  r = run(obs, physics.Denoise(), cfg, jax.random.key(0), reference=gt,
          progress=lambda i: print(
              f"it {i['iteration']:5d}  {i['its_per_second']:.2f} it/s  "
              f"loss {i['loss']:.5f}  oracle PSNR " + "  ".join(
                  f"{k} {v:.2f}" for k, v in i["psnr"].items()), flush=True))
  loop = r.seconds - r.compile_seconds
  print(f"{kind}: {channels} channels, {iterations} its: returned "
        f"({r.chosen}) {metrics.psnr(r.image, gt):.2f} dB; "
        f"{r.seconds:.1f} s, compile {r.compile_seconds:.1f} s, "
        f"{loop / iterations:.3f} s/it (setup included)")
  p = r.history["checkpoint_psnr"]
  best = np.unravel_index(np.argmax(p), p.shape)
  print(f"oracle best {p[best]:.2f} dB ({r.history['checkpoint_names'][best[1]]} "
        f"at it. {r.history['checkpoint_iteration'][best[0]]})")


def main(argv):
  inp = dio.benchmark_input("denoise", dio.default_data_dir())
  obs, gt = inp["observation"], inp["ground_truth"]
  if argv[1] == "tv":
    tv_sweep(obs, gt)
  else:
    channels, its, every = (int(a) for a in argv[2:5])
    net_run(argv[1], obs, gt, channels, its, every)


if __name__ == "__main__":
  main(sys.argv)
