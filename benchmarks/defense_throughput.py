"""Purified CIFAR-10 images per second, both DNCF modes.

    python -m benchmarks.defense_throughput                        # batches of 32
    python -m benchmarks.defense_throughput --batch_sizes=32,256   # a GPU

For each mode (``per_image``: one theta per image, vmapped; ``shared``:
one theta per batch) and batch size, :func:`dncf_jax.defense.purify` on
consecutive batches of the 2000-image CIFAR-10 subset of ``BENCHMARKS.md``
with ``DefenseConfig()``'s defaults (``--iterations=30``: the setting of
``experiments/configs/defense_cifar10.flags``). The first call, which
compiles, is timed apart; then ``--repeats`` calls on new batches give
images per second (median, min, max). Prints a Markdown table and writes
JSON.

``--breakdown=y_solver=none,channels=8`` says where the time goes: each
setting changed alone from the default, its images/s beside the
default's (batches of the first ``--batch_sizes``), as a ratio.
"""

from __future__ import annotations

import sys

from absl import flags

from benchmarks.common import (changed, describe, machine, peak_rss_mb,
                               purify_throughput, write_json)
from experiments import cli

FLAGS = flags.FLAGS
MODES = ("per_image", "shared")

flags.DEFINE_list("modes", list(MODES), f"Among {MODES}.")
flags.DEFINE_list("batch_sizes", ["32"], "Images per purify call.")
flags.DEFINE_integer("repeats", 3, "Timed calls after the compiling one.")
flags.DEFINE_integer("iterations", None, "DNCF iterations per image "
                     "(default: DefenseConfig's).")
flags.DEFINE_integer("channels", None, "Width of the 3-conv net (default: "
                     "DefenseConfig's).")
flags.DEFINE_list("breakdown", [], "Settings (DefenseConfig flag=value) "
                  "each changed alone from the default and timed beside it.")
flags.DEFINE_string("data_dir", None, "Shared data (default ../shared/data).")
flags.DEFINE_string("output", "benchmarks/results/defense_throughput.json",
                    "JSON path.")


def base_config(mode: str):
  """``DefenseConfig`` of ``mode`` with ``--iterations``/``--channels`` when given."""
  from dncf_jax import defense
  given = {k: getattr(FLAGS, k) for k in ("iterations", "channels")
           if getattr(FLAGS, k) is not None}
  cfg = defense.DefenseConfig(mode=mode, **given)
  cfg.validate()
  return cfg


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  import jax
  from dncf_jax import defense, io as dio
  modes = [m for m in FLAGS.modes if m]
  bad = [m for m in modes if m not in MODES]
  if bad or not modes:
    raise ValueError(f"--modes must be among {MODES}, got {FLAGS.modes}")
  try:
    sizes = [int(b) for b in FLAGS.batch_sizes]
  except ValueError:
    raise ValueError(f"--batch_sizes must be integers, got {FLAGS.batch_sizes}")
  if not sizes or min(sizes) < 1 or FLAGS.repeats < 1:
    raise ValueError("--batch_sizes must be >= 1 and --repeats >= 1")
  images, _ = dio.load_cifar10_test(FLAGS.data_dir or dio.default_data_dir())
  out = dict(benchmark="defense_throughput", devices=jax.device_count(),
             machine=machine(), argv=sys.argv[1:], runs=[])
  print("| mode | batch | first call s (compile) | images/s median (min-max) |")
  print("|---|---|---|---|")
  for mode in modes:
    cfg = base_config(mode)
    for b in sizes:
      r = purify_throughput(images, cfg, b, FLAGS.repeats)
      out["runs"].append(r)
      ips = r["images_per_second"]
      print(f"| {mode} | {b} | {r['first_call_seconds']:.1f} | "
            f"{ips['median']:.1f} ({ips['min']:.1f}-{ips['max']:.1f}) |",
            flush=True)
  if FLAGS.breakdown:
    print("\n| mode | setting | images/s | x default |\n|---|---|---|---|")
  for mode in modes if FLAGS.breakdown else ():
    base = base_config(mode)
    ref = None
    for item in ["default"] + list(FLAGS.breakdown):
      cfg = base if item == "default" else changed(base, item)
      r = purify_throughput(images, cfg, sizes[0], FLAGS.repeats)
      rate = r["images_per_second"]["median"]
      ref = ref or rate
      out["runs"].append(dict(r, setting=item, ratio_to_default=rate / ref))
      print(f"| {mode} | {item} | {rate:.1f} | {rate / ref:.2f} |", flush=True)
  out["peak_rss_mb"] = peak_rss_mb()
  write_json(FLAGS.output, out, f" ({describe(out['machine'])})")


if __name__ == "__main__":
  cli.run_main(main)
