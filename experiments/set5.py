"""The ``set5`` check of BENCHMARKS.md: ``python -m experiments.set5``.

One image can flatter a method; five are harder to fool. For the five
colour images of ``cset5/`` (128x128 center crops), denoising (sigma 25,
``default_rng(i)`` noise for the i-th image) and x4 super-resolution
(Lanczos LR of 32x32), each method runs with the settings it has in Table
2's profile (:mod:`experiments.table2_runs`: DNCF from
``<task>_cpu_small.flags``, DIP at 32 channels, TV by the discrepancy
principle), and the command writes

* ``<output_dir>/set5_<profile>.md``: per task, rows = images and their
  mean, columns = methods, the blind PSNR with the oracle beside it;
* ``<output_dir>/set5_<profile>.json``: every run's record, rewritten after
  each run (``--resume`` keeps runs made with the same settings).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from absl import flags
import numpy as np

from dncf_jax import io as dio
from experiments import cli
from experiments import table2_report as report
from experiments import table2_runs as runs

FLAGS = flags.FLAGS
METHODS = ("dncf", "tv", "bicubic", "dip", "deepred")

flags.DEFINE_enum("profile", "cpu_small", ["cpu_small", "tiny"],
                  "Budgets of Table 2's profile (tiny: tests, 32x32 crops).")
flags.DEFINE_list("tasks", list(dio.SET5_TASKS), "Among denoise, sr.")
flags.DEFINE_list("methods", ["dncf", "tv", "bicubic"],
                  f"Among {METHODS} (bicubic: SR only).")
flags.DEFINE_integer("images", 5, "Use the first n images (sorted names).")
flags.DEFINE_string("output_dir", "results", "Where the table goes.")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Folder of the shared data (../shared/data).")
flags.DEFINE_boolean("resume", False, "Keep the runs already in the JSON.")
flags.DEFINE_string("compilation_cache",
                    os.path.join(os.path.expanduser("~"), ".cache", "dncf_jax"),
                    "JAX's persistent compilation cache. Empty: off.")


def _mean(values: list) -> Optional[float]:
  vals = [v for v in values if v is not None]
  return float(np.mean(vals)) if len(vals) == len(values) and vals else None


def markdown(prof: str, done: dict, tasks: list, methods: list,
             names: list) -> str:
  """Per task: rows = images and the mean, cells = blind PSNR (oracle)."""
  out = [f"# set5 ({prof} profile)", "",
         "Blind PSNR in dB (what the method returns, chosen without the "
         "ground truth); \"oracle\" = the best PSNR met along the way, "
         "which needs the ground truth. Seed 0.", ""]
  for task in tasks:
    ms = [m for m in methods if runs.applies(m, task)]
    out += [f"## {task}", "",
            "| image | " + " | ".join(runs.METHOD_NAMES[m] for m in ms) + " |",
            "|---" * (len(ms) + 1) + "|"]
    for name in names + ["mean"]:
      cells = []
      for m in ms:
        if name == "mean":
          recs = [done.get(f"{task}/{m}/{n}") or {} for n in names]
          rec = {k: _mean([r.get(k) for r in recs])
                 for k in ("psnr", "oracle_psnr")}
        else:
          rec = done.get(f"{task}/{m}/{name}") or {}
        text = "-" if rec.get("psnr") is None else f"{rec['psnr']:.2f}"
        if rec.get("oracle_psnr") is not None:
          text += f" ({rec['oracle_psnr']:.2f})"
        cells.append(f"**{text}**" if name == "mean" else text)
      label = "**mean**" if name == "mean" else name
      out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  tasks = runs.check_choice("task", FLAGS.tasks, dio.SET5_TASKS)
  methods = runs.check_choice("method", FLAGS.methods, METHODS)
  if not 1 <= FLAGS.images <= 5:
    raise ValueError(f"--images must be in 1..5, got {FLAGS.images}")
  prof = runs.profile(FLAGS.profile)
  inputs = {t: dio.set5_inputs(t, FLAGS.data_dir)[:FLAGS.images] for t in tasks}
  if prof.crop:
    inputs = {t: [(n, runs.crop_input(t, i, prof.crop)) for n, i in v]
              for t, v in inputs.items()}
  import jax  # after flags, so JAX_PLATFORMS etc. from the environment apply
  cli.use_compilation_cache(FLAGS.compilation_cache)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  stem = os.path.join(FLAGS.output_dir, f"set5_{prof.name}")
  done = report.load_previous(stem + ".json", prof.name) if FLAGS.resume else {}
  payload = dict(profile=prof.name, device=jax.devices()[0].device_kind,
                 command="python -m experiments.set5 " + " ".join(sys.argv[1:]),
                 runs=done)
  for task in tasks:
    for m in methods:
      if not runs.applies(m, task):
        continue
      for name, inp in inputs[task]:
        key = f"{task}/{m}/{name}"
        cfg = report.jsonable(runs.cell_config(task, m, 0, prof, {}))
        if key in done and done[key].get("settings") == cfg:
          continue
        run = runs.run_one(task, m, 0, prof, inp, {})
        done[key] = report.jsonable(dict(run.record, image=name, settings=cfg))
        report.write_json(stem + ".json", payload)
        print(f"{key}: {report.describe(run.record)}", flush=True)
  names = [n for n, _ in inputs[tasks[0]]]
  with open(stem + ".md", "w") as f:
    f.write(markdown(prof.name, done, tasks, methods, names))
  print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
  cli.run_main(main)
