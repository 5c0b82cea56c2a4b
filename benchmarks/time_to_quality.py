"""Time to quality: DNCF against DIP, in one process, on the same input.

    python -m benchmarks.time_to_quality                       # cpu_small, 4 tasks
    python -m benchmarks.time_to_quality --tasks=denoise --repeats=3
    python -m benchmarks.time_to_quality --profile=paper --dip_channels=128   # a GPU

For every task with a ground truth (BENCHMARKS.md, profile ``cpu_small``
unless ``--profile``), DNCF (the settings of the task's flagfile, run to
its whole budget: no early stop, so that the curve is complete; its blind
answer is the same) and DIP (the notebook preset of the task) each run
to their budget. At every checkpoint the wall time and the PSNR of every
candidate image are kept. The target is DIP's best PSNR (the better of its
raw and moving-average outputs, an ORACLE quantity); if DNCF never gets
there, the target is the best PSNR DNCF reaches ("the closest either
gets"). For each method: seconds to the target, counted from the call
(compilation included) and from the end of compilation (the loop alone),
seconds per iteration, compile seconds, and the process's peak resident
memory after the run (it only grows: DIP's includes DNCF's). The ratio is
DIP's seconds over DNCF's. A second comparison needs no oracle on DNCF's
side: how long DIP takes to match the PSNR of what DNCF returns blind.

With ``--repeats`` > 1 every number is the median over repeats, with the
min-max spread. Compilation is not cached across repeats (the persistent
cache is off unless ``--compilation_cache``), so compile seconds are
those of a cold start. Writes ``--output`` (JSON) and prints a table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import flags
import numpy as np

from benchmarks.common import (describe, iteration_to, machine,
                               peak_rss_mb, seconds_to, shared_data_dir)
from experiments import cli
from experiments import table2_runs as tr

FLAGS = flags.FLAGS
GT_TASKS = ("denoise", "sr", "inpaint1", "inpaint2")

flags.DEFINE_list("tasks", list(GT_TASKS), "Tasks with a ground truth.")
flags.DEFINE_enum("profile", "cpu_small", ["cpu_small", "paper", "tiny"],
                  "Inputs and DNCF flagfiles (see experiments/table2_runs.py).")
flags.DEFINE_integer("repeats", 1, "Runs per method and task (median, spread).")
flags.DEFINE_integer("dip_channels", 32, "DIP width (the notebooks: 128; "
                     "1.5 s per iteration on a 2-core CPU).")
flags.DEFINE_integer("dip_iterations", 0, "DIP budget (0: the notebook's).")
flags.DEFINE_integer("dncf_iterations", 0, "DNCF budget (0: the flagfile's).")
flags.DEFINE_integer("dip_checkpoint_every", 50, "DIP's PSNR sampling.")
flags.DEFINE_string("data_dir", None, "Shared data (default ../shared/data).")
flags.DEFINE_string("output", "benchmarks/results/time_to_quality.json",
                    "JSON written here.")
flags.DEFINE_string("compilation_cache", "", "JAX persistent compilation "
                    "cache (default off: compile seconds are cold).")


def run_method(method: str, task: str, prof, inputs: dict, task_obj) -> dict:
  """One run: its curve (iteration, s, PSNR), compile s, blind answer."""
  import jax
  import dncf_jax as dn
  from dncf_jax import baselines as bl, metrics
  t0 = time.perf_counter()
  rows, rec = tr.curve_recorder(t0)
  gt = inputs["ground_truth"]
  if method == "dncf":
    over = dict(early_stop=False)
    if FLAGS.dncf_iterations:
      over["iterations"] = FLAGS.dncf_iterations
    cfg = tr.dncf_config(task, prof, 0, over)
    r = dn.restore(inputs["observation"], task_obj, cfg, jax.random.key(0),
                   reference=gt, progress=rec)
  else:
    over = dict(checkpoint_every=FLAGS.dip_checkpoint_every)
    if FLAGS.dip_iterations:
      over["iterations"] = FLAGS.dip_iterations
    prof_dip = dataclasses.replace(prof, net_channels=FLAGS.dip_channels)
    cfg = tr.net_config("dip", task, prof_dip, 0, over)
    r = bl.dip_restore(inputs["observation"], task_obj, cfg,
                       jax.random.key(0), reference=gt, progress=rec)
  curve = np.asarray(rows, np.float64).reshape(-1, 3)
  its = int(curve[-1, 0])
  loop = r.seconds - r.compile_seconds
  blind_psnr = metrics.psnr(r.image, gt)
  pos = np.nonzero(curve[:, 0] >= r.chosen_iteration)[0]
  return dict(
      curve=curve, seconds=r.seconds, compile_seconds=r.compile_seconds,
      iterations=its, seconds_per_iteration=loop / its,
      best_psnr=float(curve[:, 2].max()),
      best_iteration=int(curve[int(np.argmax(curve[:, 2])), 0]),
      blind_psnr=blind_psnr, blind_chosen=r.chosen,
      blind_iteration=int(r.chosen_iteration),
      blind_seconds=float(curve[pos[0], 1]) if pos.size else r.seconds,
      peak_rss_mb=peak_rss_mb(),
      config=cfg.flat())


def compare(dncf: dict, dip: dict) -> dict:
  """Seconds to the common target, and to DNCF's blind PSNR, and ratios."""
  target = dip["best_psnr"]
  reached = dncf["best_psnr"] >= target - 1e-6
  if not reached:
    target = dncf["best_psnr"]
  out = dict(target_psnr=target, target_is_dip_best=bool(reached),
             dip_best_psnr=dip["best_psnr"], dncf_best_psnr=dncf["best_psnr"])
  for name, r in (("dncf", dncf), ("dip", dip)):
    t = seconds_to(r["curve"], target)
    out[f"{name}_seconds_to_target"] = t
    out[f"{name}_loop_seconds_to_target"] = (None if t is None else
                                             t - r["compile_seconds"])
    out[f"{name}_iterations_to_target"] = iteration_to(r["curve"], target)
  a, b = out["dip_seconds_to_target"], out["dncf_seconds_to_target"]
  out["ratio_dip_over_dncf"] = a / b if a and b else None
  a, b = out["dip_loop_seconds_to_target"], out["dncf_loop_seconds_to_target"]
  out["loop_ratio_dip_over_dncf"] = a / b if a and b else None
  t = seconds_to(dip["curve"], dncf["blind_psnr"])
  out["dip_seconds_to_dncf_blind"] = t
  out["dncf_blind_seconds"] = dncf["blind_seconds"]
  out["ratio_dip_to_dncf_blind"] = (t / dncf["blind_seconds"] if t else None)
  return out


def _median(values):
  vals = [v for v in values if v is not None]
  if not vals:
    return dict(median=None, min=None, max=None, n=0)
  return dict(median=float(np.median(vals)), min=float(np.min(vals)),
              max=float(np.max(vals)), n=len(vals))


def summarise(runs: list[dict], comps: list[dict]) -> dict:
  keys = ("seconds", "compile_seconds", "seconds_per_iteration", "best_psnr",
          "blind_psnr", "blind_seconds", "peak_rss_mb")
  out = {}
  for m in ("dncf", "dip"):
    out[m] = {k: _median([r[m][k] for r in runs]) for k in keys}
  out["compare"] = {k: _median([c[k] for c in comps]) for k in comps[0]
                    if isinstance(comps[0][k], (int, float)) or
                    comps[0][k] is None}
  return out


def _fmt(x, spec=".1f"):
  return "-" if x is None else format(x, spec)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  cli.use_compilation_cache(FLAGS.compilation_cache)
  tasks = tr.check_choice("task", FLAGS.tasks, GT_TASKS)
  if FLAGS.repeats < 1:
    raise ValueError(f"--repeats must be >= 1, got {FLAGS.repeats}")
  data_dir = shared_data_dir(FLAGS.data_dir)
  prof = tr.profile(FLAGS.profile)
  result = dict(benchmark="time_to_quality", profile=prof.name,
                machine=machine(), argv=sys.argv[1:], tasks={})
  os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
  print(f"device: {describe(result['machine'])}", flush=True)
  for task in tasks:
    inputs = tr.task_input(task, prof, data_dir)
    task_obj = tr.make_physics(task, inputs, tr.task_flags(task, prof))
    runs, comps = [], []
    for rep in range(FLAGS.repeats):
      pair = {m: run_method(m, task, prof, inputs, task_obj)
              for m in ("dncf", "dip")}
      comps.append(compare(pair["dncf"], pair["dip"]))
      runs.append(pair)
      c = comps[-1]
      print(f"{task} #{rep}: target {c['target_psnr']:.2f} dB "
            f"({'DIP best' if c['target_is_dip_best'] else 'DNCF best: DIP best is higher'}); "
            f"DNCF {_fmt(c['dncf_seconds_to_target'])} s "
            f"(loop {_fmt(c['dncf_loop_seconds_to_target'])}), DIP "
            f"{_fmt(c['dip_seconds_to_target'])} s "
            f"(loop {_fmt(c['dip_loop_seconds_to_target'])}); ratio "
            f"{_fmt(c['ratio_dip_over_dncf'], '.2f')} "
            f"(loops {_fmt(c['loop_ratio_dip_over_dncf'], '.2f')}); DNCF blind "
            f"{pair['dncf']['blind_psnr']:.2f} dB at "
            f"{pair['dncf']['blind_seconds']:.1f} s, DIP matches it at "
            f"{_fmt(c['dip_seconds_to_dncf_blind'])} s", flush=True)
      for m, r in pair.items():
        print(f"  {m}: best {r['best_psnr']:.2f} dB @{r['best_iteration']}, "
              f"blind {r['blind_psnr']:.2f} dB ({r['blind_chosen']} "
              f"@{r['blind_iteration']}), {r['iterations']} its, "
              f"{r['seconds']:.1f} s (compile {r['compile_seconds']:.1f}), "
              f"{r['seconds_per_iteration']:.3f} s/it, peak RSS "
              f"{r['peak_rss_mb']:.0f} MiB", flush=True)
    result["tasks"][task] = dict(
        summary=summarise(runs, comps), comparisons=comps,
        runs=[{m: {**r, "curve": r["curve"].round(4).tolist()}
               for m, r in pair.items()} for pair in runs])
    with open(FLAGS.output, "w") as f:     # after every task: partial results
      json.dump(result, f, indent=1)
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  cli.run_main(main)
