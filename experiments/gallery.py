"""The README's gallery: ``python -m experiments.gallery``.

DNCF on every task of a profile (the inputs of BENCHMARKS.md and the
settings of ``experiments/configs/<task>_cpu_small.flags``, seed 0), one
row per task: the observation, what DNCF returns (chosen blind, with its
seconds and PSNR) and the reference (ground truth; the flash image for
flash/no-flash; nothing for the vase). Writes ``<output_dir>/<name>.png``
and a JSON of the numbers beside it; the README's figure is
``--output_dir=docs --overwrite``.
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags
import numpy as np

from dncf_jax import io as dio
from experiments import cli
from experiments import table2_report as report
from experiments import table2_runs as runs

FLAGS = flags.FLAGS

flags.DEFINE_enum("profile", "cpu_small", ["cpu_small", "tiny"],
                  "Inputs and budgets (tiny: tests, 32x32 crops).")
flags.DEFINE_list("tasks", list(runs.TASKS), f"Rows, among {runs.TASKS}.")
flags.DEFINE_string("output_dir", "outputs", "Folder of the figure "
                    "<name>.png and its numbers <name>.json (the README's: "
                    "docs).")
flags.DEFINE_string("name", "gallery", "Name of the outputs.")
flags.DEFINE_boolean("overwrite", False, "Replace an earlier figure of the "
                     "same --name in --output_dir (without it the command "
                     "stops before any work).")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Data folder (default: $DNCF_DATA, ../shared/data, "
                    "~/.cache/dncf_jax/data).")
flags.DEFINE_string("compilation_cache", cli.default_cache_dir(),
                    "JAX's persistent compilation cache. Empty: off.")


def reference(inputs: dict):
  """(caption, image) of the last column, or None."""
  if "ground_truth" in inputs:
    return "ground truth", inputs["ground_truth"]
  if "flash" in inputs:
    return "flash image (input)", inputs["flash"]
  return None


def figure(path: str, rows: list[tuple[str, dict, np.ndarray, dict]]) -> None:
  """One row per task: observation | DNCF | reference."""
  plt = report._plt()
  fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)),
                           squeeze=False)
  for ax_row, (task, inputs, image, rec) in zip(axes, rows):
    caption = f"DNCF, {rec['seconds']:.0f} s"
    if rec.get("psnr") is not None:
      caption += f", {rec['psnr']:.2f} dB"
    obs = inputs["observation"]
    ref = reference(inputs)
    tiles = [(f"{task}: observation", obs), (caption, image),
             ref if ref is not None else ("(no reference)", None)]
    for ax, (title, im) in zip(ax_row, tiles):
      if im is not None:
        ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
      ax.set_title(title, fontsize=9)
      ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  tasks = runs.check_choice("task", FLAGS.tasks, runs.TASKS)
  if not FLAGS.name or os.sep in FLAGS.name:
    raise ValueError(f"--name must be a file name, got {FLAGS.name!r}")
  stem = os.path.join(FLAGS.output_dir, FLAGS.name)
  png, js = stem + ".png", stem + ".json"
  cli.refuse_overwrite([png, js], FLAGS.overwrite,
                       "another --name/--output_dir")
  prof = runs.profile(FLAGS.profile)
  inputs = {t: runs.task_input(t, prof, FLAGS.data_dir) for t in tasks}
  cli.use_compilation_cache(FLAGS.compilation_cache)
  record = cli.run_record()
  print(f"gallery: profile {prof.name}, tasks {tasks}, device "
        f"{record['device']['kind']}", flush=True)
  rows, numbers = [], {}
  t0 = time.perf_counter()
  for i, t in enumerate(tasks):
    print(f"[{i + 1}/{len(tasks)}] {t}: running (compiling first unless "
          f"cached) ...", flush=True)
    run = runs.run_one(t, "dncf", 0, prof, inputs[t], {})
    rows.append((t, inputs[t], run.image, run.record))
    numbers[t] = report.jsonable({k: run.record.get(k) for k in (
        "psnr", "oracle_psnr", "mse", "ssim", "seconds", "iterations",
        "chosen", "chosen_iteration")})
    print(f"{t}: {report.describe(run.record)}; "
          f"{cli.duration(time.perf_counter() - t0)} elapsed", flush=True)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  figure(png, rows)
  report.write_json(js, dict(
      record, profile=prof.name,
      command="python -m experiments.gallery " + " ".join(sys.argv[1:]),
      tasks=numbers))
  print(f"gallery: {len(tasks)} tasks, "
        f"{cli.duration(time.perf_counter() - t0)} -> {png} and {js}",
        flush=True)


if __name__ == "__main__":
  cli.run_main(main)
