"""Which y-step pays (paper section 5): L-BFGS, BFGS, Adam or none on y.

    python -m benchmarks.y_solvers                       # cpu_small denoise
    python -m benchmarks.y_solvers --crop=48 --solvers=lbfgs,bfgs,adam,none

DNCF on the cpu_small denoise input (its flagfile's settings, no early
stop) with each y-solver; ``lbfgs-jaxopt`` is the same L-BFGS through
jaxopt's solver (``fuse_gradients=False``: one more forward and backward
pass per iteration), to measure what the fused step saves. Dense BFGS
needs a (HWC)^2 matrix, so it only runs on a ``--crop`` (48: 6912
entries). For each: iterations and seconds (compilation excluded, and
included) until the best candidate's ORACLE PSNR reaches ``--target``,
the best PSNR, the blind answer, seconds per iteration, network
evaluations on y per iteration. Writes JSON, prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
import numpy as np

from benchmarks.common import (iteration_to, machine, peak_rss_mb, seconds_to,
                               shared_data_dir)
from experiments import cli
from experiments import table2_runs as tr

FLAGS = flags.FLAGS
SOLVERS = ("lbfgs", "lbfgs-jaxopt", "bfgs", "adam", "none")

flags.DEFINE_list("solvers", ["lbfgs", "lbfgs-jaxopt", "adam", "none"],
                  f"y-solvers among {SOLVERS}.")
flags.DEFINE_float("target", 28.0, "PSNR (dB) to reach (the denoise floor).")
flags.DEFINE_integer("iterations", 300, "Budget of every run.")
flags.DEFINE_integer("crop", 0, "Center crop of the 128x128 input (0: none).")
flags.DEFINE_float("y_learning_rate", 0.01, "Adam's step on y.")
flags.DEFINE_string("data_dir", None, "Shared data (default ../shared/data).")
flags.DEFINE_string("output", "benchmarks/results/y_solvers.json", "JSON path.")


def run(solver: str, inputs: dict, task_obj, prof) -> dict:
  import jax
  import dncf_jax as dn
  from dncf_jax import metrics
  over = dict(early_stop=False, iterations=FLAGS.iterations,
              y_learning_rate=FLAGS.y_learning_rate,
              y_solver="lbfgs" if solver == "lbfgs-jaxopt" else solver,
              fuse_gradients=solver != "lbfgs-jaxopt")
  cfg = tr.dncf_config("denoise", prof, 0, over)
  rows, progress = tr.curve_recorder(time.perf_counter())
  r = dn.restore(inputs["observation"], task_obj, cfg, jax.random.key(0),
                 reference=inputs["ground_truth"], progress=progress)
  curve = np.asarray(rows, np.float64)
  t = seconds_to(curve, FLAGS.target)
  its = int(curve[-1, 0])
  return dict(
      solver=solver, iterations=its,
      iterations_to_target=iteration_to(curve, FLAGS.target),
      seconds_to_target=t,
      loop_seconds_to_target=None if t is None else t - r.compile_seconds,
      best_psnr=float(curve[:, 2].max()),
      blind_psnr=metrics.psnr(r.image, inputs["ground_truth"]),
      blind=f"{r.chosen} @{r.chosen_iteration}",
      seconds=r.seconds, compile_seconds=r.compile_seconds,
      seconds_per_iteration=(r.seconds - r.compile_seconds) / its,
      y_evals_per_iteration=float(np.mean(r.history["y_evals"])),
      peak_rss_mb=peak_rss_mb(), curve=curve.round(4).tolist())


def _crop(a: np.ndarray, n: int) -> np.ndarray:
  r0, c0 = (a.shape[0] - n) // 2, (a.shape[1] - n) // 2
  return a[r0:r0 + n, c0:c0 + n]


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  from dncf_jax import io as dio, physics
  solvers = tr.check_choice("solver", FLAGS.solvers, SOLVERS)
  data_dir = shared_data_dir(FLAGS.data_dir)
  inputs = dio.benchmark_input("denoise", data_dir)
  if FLAGS.crop:
    if not 32 <= FLAGS.crop <= 128:
      raise ValueError(f"--crop must be in [32, 128], got {FLAGS.crop}")
    inputs = {k: _crop(v, FLAGS.crop) for k, v in inputs.items()}
  prof = tr.profile("cpu_small")
  fl = tr.task_flags("denoise", prof)
  task_obj = physics.Denoise(rho=float(fl.get("rho", 1.0)))
  shape = inputs["observation"].shape
  out = dict(benchmark="y_solvers", input=f"cpu_small denoise, {shape}",
             target_psnr=FLAGS.target, machine=machine(), argv=sys.argv[1:],
             runs=[])
  os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
  print("| y-solver | its to target | s to target (loop) | s to target (all) "
        "| best dB | blind dB | s/it | y-evals/it | compile s |")
  print("|---|---|---|---|---|---|---|---|---|")
  fmt = lambda x, s=".1f": "-" if x is None else format(x, s)
  for s in solvers:
    r = run(s, inputs, task_obj, prof)
    out["runs"].append(r)
    print(f"| {s} | {fmt(r['iterations_to_target'], 'd')} | "
          f"{fmt(r['loop_seconds_to_target'])} | {fmt(r['seconds_to_target'])} | "
          f"{r['best_psnr']:.2f} | {r['blind_psnr']:.2f} ({r['blind']}) | "
          f"{r['seconds_per_iteration']:.3f} | {r['y_evals_per_iteration']:.2f} | "
          f"{r['compile_seconds']:.1f} |", flush=True)
    with open(FLAGS.output, "w") as f:
      json.dump(out, f, indent=1)
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  cli.run_main(main)
