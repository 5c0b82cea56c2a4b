"""Where the blind stop falls against the oracle peak, seed by seed.

    python -m benchmarks.stop_rule                       # cpu_small denoise, seeds 0-2

DNCF on the cpu_small denoise input (Table 2's settings) run past its
blind stop (``early_stop=False``), scoring the moving average ``ema f(y)``
at every checkpoint: its residual over the discrepancy target
``tau * sigma^2`` (the stop is the first checkpoint at or below 1,
``dncf_jax.select``) and its PSNR against the ground truth (the oracle).
Prints, per seed, the stop and the peak (iteration, PSNR) and writes JSON
with both curves. Uses the ground truth for scoring only.
"""

from __future__ import annotations


from absl import flags

from benchmarks.common import shared_data_dir, stop_and_peak, write_json
from experiments import cli
from experiments import table2_runs as tr

FLAGS = flags.FLAGS

flags.DEFINE_integer("seeds", 3, "Seeds 0..n-1.")
flags.DEFINE_integer("iterations", 200, "Budget of every run (no early stop).")
flags.DEFINE_string("data_dir", None, "Shared data (default ../shared/data).")
flags.DEFINE_string("output", "benchmarks/results/stop_rule.json", "JSON path.")


def main(argv):
  del argv
  import jax
  import dncf_jax as dn
  from dncf_jax import select
  if FLAGS.seeds < 1 or FLAGS.iterations < 1:
    raise ValueError("--seeds and --iterations must be >= 1")
  data_dir = shared_data_dir(FLAGS.data_dir, "dip")
  prof = tr.profile("cpu_small")
  inputs = tr.task_input("denoise", prof, data_dir)
  task = tr.make_physics("denoise", inputs, tr.task_flags("denoise", prof))
  out = dict(device=jax.devices()[0].device_kind, runs={})
  for seed in range(FLAGS.seeds):
    cfg = tr.dncf_config("denoise", prof, seed).replace(
        early_stop=False, iterations=FLAGS.iterations)
    r = dn.restore(inputs["observation"], task, cfg, jax.random.key(cfg.seed),
                   reference=inputs["ground_truth"])
    its = r.history["checkpoint_iteration"]
    ratio = r.history["checkpoint_residual"][:, select.EMA] / (
        cfg.select.tau * r.noise_sigma ** 2)
    psnr = r.history["checkpoint_psnr"][:, select.EMA]
    summary = stop_and_peak(its, ratio, psnr)
    out["runs"][seed] = dict(summary, sigma=r.noise_sigma, tau=cfg.select.tau,
                             iteration=its.tolist(), ratio=ratio.tolist(),
                             psnr=psnr.tolist())
    stop = ("never" if summary["stop_iteration"] is None else
            f"at iteration {summary['stop_iteration']} "
            f"({summary['stop_psnr']:.2f} dB)")
    print(f"seed {seed}: sigma {r.noise_sigma:.4f}; blind stop {stop}; "
          f"oracle peak of ema f(y) at {summary['peak_iteration']} "
          f"({summary['peak_psnr']:.2f} dB)", flush=True)
  write_json(FLAGS.output, out)


if __name__ == "__main__":
  cli.run_main(main)
