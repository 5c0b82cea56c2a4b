"""Hand checks of the baselines on the cpu-small denoise input (BENCHMARKS.md).

    python -m experiments.baselines_check --method=tv       # TV weight sweep
    python -m experiments.baselines_check --method=dip --channels=32 --iterations=400
    python -m experiments.baselines_check --method=deepred --iterations=400

Prints one line per weight / checkpoint (the PSNR columns are ORACLE:
they need the ground truth). Writes nothing.
"""

from __future__ import annotations

import time

from absl import app, flags
import numpy as np

from experiments import cli
from dncf_jax import baselines as bl
from dncf_jax import io as dio
from dncf_jax import metrics, physics

FLAGS = flags.FLAGS
flags.DEFINE_enum("method", "tv", ["tv", "dip", "deepred"], "tv: the blind "
                  "and oracle TV weights against scikit-image's; dip, "
                  "deepred: a run with the oracle PSNR at every checkpoint.")
flags.DEFINE_integer("channels", 32, "Width of the DIP / DeepRED net.")
flags.DEFINE_integer("iterations", 400, "DIP / DeepRED iterations.")
flags.DEFINE_integer("checkpoint_every", 25, "Score and print every n "
                     "iterations.")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Data folder (default: $DNCF_DATA, ../shared/data, "
                    "~/.cache/dncf_jax/data).")
flags.DEFINE_string("compilation_cache", cli.default_cache_dir(),
                    "JAX's persistent compilation cache. Empty: off.")


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
  import jax
  if kind == "dip":
    cfg = bl.dip_config("denoise", channels=channels, iterations=iterations,
                        checkpoint_every=every)
    run = bl.dip_restore
  else:
    cfg = bl.deepred_config("denoise", channels=channels,
                            iterations=iterations, checkpoint_every=every,
                            denoiser_weight=0.02)
    run = bl.deepred_restore
  print("compiling (first run of this shape; cached afterwards) ...",
        flush=True)
  r = run(obs, physics.Denoise(), cfg, jax.random.key(0), reference=gt,
          progress=lambda i: print(
              f"{cli.progress_line(i)}, loss {i['loss']:.5f}, oracle PSNR "
              + " ".join(f"{k}={v:.2f}" for k, v in i["psnr"].items()),
              flush=True))
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
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if min(FLAGS.channels, FLAGS.iterations, FLAGS.checkpoint_every) < 1:
    raise ValueError("--channels, --iterations and --checkpoint_every must "
                     "be >= 1")
  inp = dio.benchmark_input("denoise", FLAGS.data_dir)
  obs, gt = inp["observation"], inp["ground_truth"]
  cli.use_compilation_cache(FLAGS.compilation_cache)
  if FLAGS.method == "tv":
    tv_sweep(obs, gt)
  else:
    net_run(FLAGS.method, obs, gt, FLAGS.channels, FLAGS.iterations,
            FLAGS.checkpoint_every)


if __name__ == "__main__":
  cli.run_main(main)
