"""The README's gallery: ``python -m experiments.gallery``.

DNCF on every task of a profile (the inputs of BENCHMARKS.md and the
settings of ``experiments/configs/<task>_cpu_small.flags``, seed 0), one
row per task: the observation, what DNCF returns (chosen blind, with its
seconds and PSNR) and the reference (ground truth; the flash image for
flash/no-flash; nothing for the vase). Writes ``--output`` (a PNG, by
default ``docs/gallery.png``, the file the README shows) and a JSON of
the numbers beside it.
"""

from __future__ import annotations

import os
import sys

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
flags.DEFINE_string("output", os.path.join("docs", "gallery.png"), "PNG path.")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Folder of the shared data (../shared/data).")
flags.DEFINE_string("compilation_cache",
                    os.path.join(os.path.expanduser("~"), ".cache", "dncf_jax"),
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
  if not FLAGS.output.lower().endswith(".png"):
    raise ValueError(f"--output must be a .png path, got {FLAGS.output!r}")
  prof = runs.profile(FLAGS.profile)
  inputs = {t: runs.task_input(t, prof, FLAGS.data_dir) for t in tasks}
  import jax  # after flags, so JAX_PLATFORMS etc. from the environment apply
  cli.use_compilation_cache(FLAGS.compilation_cache)
  rows, numbers = [], {}
  for t in tasks:
    run = runs.run_one(t, "dncf", 0, prof, inputs[t], {})
    rows.append((t, inputs[t], run.image, run.record))
    numbers[t] = report.jsonable({k: run.record.get(k) for k in (
        "psnr", "oracle_psnr", "mse", "ssim", "seconds", "iterations",
        "chosen", "chosen_iteration")})
    print(f"{t}: {report.describe(run.record)}", flush=True)
  os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
  figure(FLAGS.output, rows)
  stem = os.path.splitext(FLAGS.output)[0]
  report.write_json(stem + ".json", dict(
      profile=prof.name, device=jax.devices()[0].device_kind,
      command="python -m experiments.gallery " + " ".join(sys.argv[1:]),
      tasks=numbers))
  print(f"wrote {FLAGS.output} and {stem}.json")


if __name__ == "__main__":
  cli.run_main(main)
