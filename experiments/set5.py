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
  each run (``--resume`` keeps runs made with the same settings; an earlier
  table is never replaced without ``--overwrite``).
"""

from __future__ import annotations

import os
import sys
import time
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
flags.DEFINE_integer("limit", 5, "Use the first n images (sorted names).")
flags.DEFINE_string("output_dir", "outputs", "Where the table goes.")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Data folder (default: $DNCF_DATA, ../shared/data, "
                    "~/.cache/dncf_jax/data).")
flags.DEFINE_boolean("resume", False, "Keep the runs already in the JSON "
                     "(same settings) and run only the missing ones.")
flags.DEFINE_boolean("overwrite", False, "Start again, replacing the table "
                     "in --output_dir (an earlier table there stops the "
                     "command before any work unless --resume or "
                     "--overwrite).")
flags.DEFINE_string("compilation_cache", cli.default_cache_dir(),
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
  if not 1 <= FLAGS.limit <= 5:
    raise ValueError(f"--limit must be in 1..5, got {FLAGS.limit}")
  if FLAGS.resume and FLAGS.overwrite:
    raise ValueError("--resume continues the table in --output_dir, "
                     "--overwrite replaces it: pass one of them")
  prof = runs.profile(FLAGS.profile)
  stem = os.path.join(FLAGS.output_dir, f"set5_{prof.name}")
  if not FLAGS.resume:
    cli.refuse_overwrite([stem + ".json"], FLAGS.overwrite,
                         "--resume (to continue that table) or another "
                         "--output_dir")
  inputs = {t: dio.set5_inputs(t, FLAGS.data_dir)[:FLAGS.limit] for t in tasks}
  if prof.crop:
    inputs = {t: [(n, runs.crop_input(t, i, prof.crop)) for n, i in v]
              for t, v in inputs.items()}
  import jax  # after flags, so JAX_PLATFORMS etc. from the environment apply
  cli.use_compilation_cache(FLAGS.compilation_cache)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  done = report.load_previous(stem + ".json", prof.name) if FLAGS.resume else {}
  payload = dict(cli.run_record(), profile=prof.name,
                 command="python -m experiments.set5 " + " ".join(sys.argv[1:]),
                 runs=done)
  print(f"set5: profile {prof.name}, tasks {tasks}, methods {methods}, "
        f"{FLAGS.limit} image(s), device {jax.devices()[0].device_kind}",
        flush=True)
  cells = [(t, m, n, inp) for t in tasks for m in methods if runs.applies(m, t)
           for n, inp in inputs[t]]
  t0 = time.perf_counter()
  for i, (task, m, name, inp) in enumerate(cells):
    key = f"{task}/{m}/{name}"
    cfg = report.jsonable(runs.cell_config(task, m, 0, prof, {}))
    if key in done and done[key].get("settings") == cfg:
      continue
    print(f"[{i + 1}/{len(cells)}] {key}: running (compiling first unless "
          f"cached) ...", flush=True)
    run = runs.run_one(task, m, 0, prof, inp, {})
    done[key] = report.jsonable(dict(run.record, image=name, settings=cfg))
    report.write_json(stem + ".json", payload)
    print(f"{key}: {report.describe(run.record)}; "
          f"{cli.duration(time.perf_counter() - t0)} elapsed", flush=True)
  names = [n for n, _ in inputs[tasks[0]]]
  with open(stem + ".md", "w") as f:
    f.write(markdown(prof.name, done, tasks, methods, names))
  print(f"set5: {len(done)} runs, {cli.duration(time.perf_counter() - t0)} "
        f"-> {stem}.md and .json", flush=True)


if __name__ == "__main__":
  cli.run_main(main)
