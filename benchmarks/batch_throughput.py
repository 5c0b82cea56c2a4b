"""Restored images per second with :func:`dncf_jax.restore_batch` at several batch sizes.

    python -m benchmarks.batch_throughput                          # 1, 4, 16
    python -m benchmarks.batch_throughput --batch_sizes=1,16,64 --vectorize=vmap  # a GPU

The input is the ``cpu_small`` denoise observation of ``BENCHMARKS.md``
(128x128), restored ``B`` times in one call with ``B`` keys (one per
image), with Table 2's ``cpu_small`` DNCF settings run for a fixed
``--iterations`` (no early stop, so every batch does the same work). For
each batch size and way of running the batch (``--vectorize``: ``map``,
one image after the other in the program, or ``vmap``, all at once) the
first call, which compiles, is timed apart; then ``--repeats`` calls give
images per second. Prints a Markdown table with the speed-up over the
first batch size, and writes JSON.
"""

from __future__ import annotations

import sys
import time

from absl import flags
import numpy as np

from benchmarks.common import (describe, machine, peak_rss_mb,
                               shared_data_dir, write_json)
from experiments import cli
from experiments import table2_runs as tr

FLAGS = flags.FLAGS

flags.DEFINE_list("batch_sizes", ["1", "4", "16"], "Images per restore_batch call.")
flags.DEFINE_list("vectorize", ["map", "vmap"], "Ways to run a batch.")
flags.DEFINE_integer("repeats", 1, "Timed calls after the compiling one.")
flags.DEFINE_integer("iterations", 50, "DNCF iterations per image.")
flags.DEFINE_string("data_dir", None, "Data folder (default: see dncf_jax.io).")
flags.DEFINE_string("output", "benchmarks/results/batch_throughput.json",
                    "JSON path.")


def timed_batch(obs, task, cfg, batch: int, repeats: int, vectorize: str) -> dict:
  """First call (compiles) and ``repeats`` timed calls of a batch of ``batch``."""
  import jax
  import dncf_jax as dn
  keys = list(jax.random.split(jax.random.key(0), batch))
  images = [obs] * batch
  t0 = time.perf_counter()
  run = lambda: dn.restore_batch(images, task, cfg, keys, vectorize=vectorize)
  first = run()
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  ips = [batch / t for t in times]
  return dict(batch=batch, vectorize=vectorize, first_call_seconds=first_s,
              compile_seconds=first[0].compile_seconds,
              seconds=times, images_per_second=float(np.median(ips)))


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  try:
    sizes = [int(b) for b in FLAGS.batch_sizes]
  except ValueError:
    raise ValueError(f"--batch_sizes must be integers, got {FLAGS.batch_sizes}")
  if not sizes or min(sizes) < 1 or FLAGS.repeats < 1 or FLAGS.iterations < 1:
    raise ValueError("--batch_sizes, --repeats and --iterations must be >= 1")
  import jax
  prof = tr.profile("cpu_small")
  inputs = tr.task_input("denoise", prof, shared_data_dir(FLAGS.data_dir))
  task = tr.make_physics("denoise", inputs, tr.task_flags("denoise", prof))
  cfg = tr.dncf_config("denoise", prof, 0).replace(
      iterations=FLAGS.iterations, early_stop=False)
  obs = np.asarray(inputs["observation"], np.float32)
  out = dict(benchmark="batch_throughput", input=f"cpu_small denoise {obs.shape}",
             iterations=FLAGS.iterations, devices=jax.device_count(),
             machine=machine(), argv=sys.argv[1:], config=cfg.flat(), runs=[])
  print(f"| vectorize | batch | first call s (compile s) | images/s | "
        f"x batch {sizes[0]} |")
  print("|---|---|---|---|---|")
  for mode in FLAGS.vectorize:
    base = None
    for b in sizes:
      r = timed_batch(obs, task, cfg, b, FLAGS.repeats, mode)
      base = base or r["images_per_second"]
      r["speedup"] = r["images_per_second"] / base
      out["runs"].append(r)
      print(f"| {mode} | {b} | {r['first_call_seconds']:.1f} "
            f"({r['compile_seconds']:.1f}) | {r['images_per_second']:.3f} | "
            f"{r['speedup']:.2f} |", flush=True)
  out["peak_rss_mb"] = peak_rss_mb()
  write_json(FLAGS.output, out, f" ({describe(out['machine'])})")


if __name__ == "__main__":
  cli.run_main(main)
