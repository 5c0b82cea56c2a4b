"""Table 2 and its figures: ``python -m experiments.table2 --flagfile=...``.

Runs every method that applies (TV, DIP, DeepRED+TV, DNCF; bicubic for
super-resolution) on every task of a profile (:mod:`experiments.table2_runs`)
for ``--seeds`` seeds, and writes

* ``<output_dir>/table2_<profile>.md`` and ``.json``: rows = tasks,
  columns = methods, mean ± std over seeds of PSNR (blind, with the
  oracle beside it), SSIM, MSE, seconds, iterations; the JSON also holds
  every run's record;
* ``<output_dir>/table2_<profile>_runs/<task>_<method>_s<seed>.npz``: the
  returned image, the oracle curve and (flash) the snapshots;
* ``<output_dir>/figures/table2_<profile>_<task>_{panel,convergence}.png``
  and ``..._flash_transition.png``.

The JSON is rewritten after every run; ``--resume`` skips the runs it
already holds with the same settings, so an interrupted table continues.
An earlier table in ``--output_dir`` is never replaced without
``--overwrite``.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags
import numpy as np

from dncf_jax import io as dio
from experiments import cli
from experiments import table2_report as report
from experiments import table2_runs as runs

FLAGS = flags.FLAGS

flags.DEFINE_enum("profile", "cpu_small", list(runs.PROFILES),
                  "Inputs and budgets: cpu_small (BENCHMARKS cpu-small, DIP "
                  "at 32 channels), paper (full size, a GPU), tiny (tests).")
flags.DEFINE_list("tasks", list(runs.TASKS), "Tasks (rows); vase is figure only.")
flags.DEFINE_list("methods", list(runs.METHODS), "Methods (columns).")
flags.DEFINE_integer("seeds", 3, "Seeds 0..n-1 per stochastic method.")
flags.DEFINE_string("output_dir", "outputs", "Where the table and figures go.")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Data folder (default: $DNCF_DATA, ../shared/data, "
                    "~/.cache/dncf_jax/data).")
flags.DEFINE_boolean("resume", False, "Keep the runs already in the JSON "
                     "(same settings) and run only the missing ones.")
flags.DEFINE_boolean("overwrite", False, "Start again, replacing the table "
                     "in --output_dir (an earlier table there stops the "
                     "command before any work unless --resume, --report_only "
                     "or --overwrite).")
flags.DEFINE_boolean("report_only", False, "Run nothing: write the table "
                     "and figures from the JSON of an earlier run (cells it "
                     "lacks show 'not run yet' or fewer seeds).")
flags.DEFINE_integer("dncf_iterations", None, "Override DNCF's iterations.")
flags.DEFINE_integer("dncf_feature_iterations", None,
                     "Override DNCF's feature-phase iterations (flash).")
flags.DEFINE_integer("dip_iterations", None, "Override DIP's iterations.")
flags.DEFINE_integer("deepred_iterations", None,
                     "Override DeepRED's iterations.")
flags.DEFINE_integer("tv_iterations", None, "Override TV's FISTA iterations.")
flags.DEFINE_integer("net_channels", None, "Override the DIP / DeepRED width.")
flags.DEFINE_string("compilation_cache", cli.default_cache_dir(),
                    "JAX's persistent compilation cache. Empty: off.")


def overrides() -> dict[str, dict]:
  """Per-method config overrides from the flags (None: the profile's)."""
  for name in ("dncf_iterations", "dncf_feature_iterations", "dip_iterations",
               "deepred_iterations", "tv_iterations", "net_channels"):
    v = getattr(FLAGS, name)
    low = 0 if name == "dncf_feature_iterations" else 1
    if v is not None and v < low:
      raise ValueError(f"--{name} must be >= {low}, got {v}")
  return dict(
      dncf=dict(iterations=FLAGS.dncf_iterations,
                feature_iterations=FLAGS.dncf_feature_iterations),
      dip=dict(iterations=FLAGS.dip_iterations, channels=FLAGS.net_channels),
      deepred=dict(iterations=FLAGS.deepred_iterations,
                   channels=FLAGS.net_channels),
      tv=dict(iterations=FLAGS.tv_iterations))


def seeds_for(task: str, method: str, n: int) -> list[int]:
  """Deterministic methods and figure-only tasks: seed 0 only."""
  if method in runs.DETERMINISTIC or task in runs.FIGURE_ONLY:
    return [0]
  return list(range(n))


def run_dir(prof: runs.Profile) -> str:
  return os.path.join(FLAGS.output_dir, f"table2_{prof.name}_runs")


def save_arrays(path: str, run: runs.Run) -> None:
  np.savez_compressed(path, image=run.image, curve=run.curve,
                      snapshot_iteration=run.snapshot_iteration,
                      snapshot_images=run.snapshot_images)


def run_all(prof, tasks, methods, seeds, over, done: dict, payload: dict,
            json_path: str) -> None:
  """Every missing (task, method, seed); the JSON is rewritten after each."""
  os.makedirs(run_dir(prof), exist_ok=True)
  cells = [(t, m, s) for t in tasks for m in methods if runs.applies(m, t)
           for s in seeds_for(t, m, seeds)]
  t0 = time.perf_counter()
  inputs = {}
  for i, (task, method, seed) in enumerate(cells):
    key = f"{task}/{method}/{seed}"
    npz = os.path.join(run_dir(prof), f"{task}_{method}_s{seed}.npz")
    if (key in done and same_settings(done[key], prof, over)
        and os.path.isfile(npz)):
      print(f"{key}: kept from the previous run", flush=True)
      continue
    if task not in inputs:
      inputs = {task: runs.task_input(task, prof, FLAGS.data_dir)}
    print(f"[{i + 1}/{len(cells)}] {key}: running (compiling first unless "
          f"cached) ...", flush=True)
    run = runs.run_one(task, method, seed, prof, inputs[task], over)
    save_arrays(npz, run)
    done[key] = report.jsonable(run.record)
    payload["runs"] = done
    report.write_json(json_path, payload)
    print(f"{key}: {report.describe(run.record)}; "
          f"{cli.duration(time.perf_counter() - t0)} elapsed", flush=True)


def same_settings(rec: dict, prof, over) -> bool:
  """Whether a run record was made with this invocation's settings."""
  want = runs.cell_config(rec["task"], rec["method"], rec["seed"], prof, over)
  return rec.get("config") == report.jsonable(want)


def matching(done: dict, prof, over) -> dict:
  """The runs made with this invocation's settings: the table never shows a
  run made with other overrides (e.g. one kept for another task)."""
  kept = {}
  for key, rec in done.items():
    if same_settings(rec, prof, over):
      kept[key] = rec
    else:
      print(f"{key}: left out (run with other settings)", flush=True)
  return kept


def build_cells(done: dict, seeds: int) -> dict:
  """Aggregates the runs per (task, method), over the seeds asked for."""
  grouped: dict[tuple, list] = {}
  for rec in done.values():
    if rec["seed"] in seeds_for(rec["task"], rec["method"], seeds):
      grouped.setdefault((rec["task"], rec["method"]), []).append(rec)
  cells: dict[str, dict] = {}
  for (task, method), recs in grouped.items():
    cells.setdefault(task, {})[method] = report.aggregate(recs)
  return cells


def write_figures(prof, tasks, methods, fig_dir: str, done: dict) -> list[str]:
  """Panels, convergence plots and the flash transition from the saved runs."""
  os.makedirs(fig_dir, exist_ok=True)
  written = []
  for task in tasks:
    inputs = runs.task_input(task, prof, FLAGS.data_dir)
    loaded = {}
    for m in methods:
      path = os.path.join(run_dir(prof), f"{task}_{m}_s0.npz")
      if os.path.isfile(path) and f"{task}/{m}/0" in done:
        loaded[m] = dict(np.load(path))
    if not loaded:
      continue
    paths = report.figure_paths(fig_dir, prof.name, task)
    recs = {m: done[f"{task}/{m}/0"] for m in loaded}
    report.panel_figure(paths["panel"], task, inputs,
                        {m: (loaded[m]["image"], recs[m]) for m in loaded})
    written.append(paths["panel"])
    curves = {m: loaded[m]["curve"] for m in loaded if m in runs.ITERATIVE}
    if report.convergence_figure(paths["convergence"], task, curves):
      written.append(paths["convergence"])
    dncf = loaded.get("dncf")
    if task == "flash" and dncf is not None and len(dncf["snapshot_iteration"]):
      report.transition_figure(paths["transition"], inputs["flash"],
                               dncf["snapshot_iteration"],
                               dncf["snapshot_images"], inputs["observation"])
      written.append(paths["transition"])
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  prof = runs.profile(FLAGS.profile)
  tasks = runs.check_choice("task", FLAGS.tasks, runs.TASKS)
  methods = runs.check_choice("method", FLAGS.methods, runs.METHODS)
  if FLAGS.seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {FLAGS.seeds}")
  over = overrides()
  stem = os.path.join(FLAGS.output_dir, f"table2_{prof.name}")
  if FLAGS.report_only and not os.path.isfile(stem + ".json"):
    raise FileNotFoundError(f"--report_only: no {stem}.json to report from "
                            "(run the table first)")
  if FLAGS.overwrite and (FLAGS.resume or FLAGS.report_only):
    raise ValueError("--overwrite starts the table again: it goes with "
                     "neither --resume nor --report_only")
  if not os.path.isdir(os.path.join(FLAGS.data_dir, "dip")):
    raise FileNotFoundError(f"no dip/ images under --data_dir={FLAGS.data_dir} "
                            "(the shared data folder, ../shared/data)")
  if not (FLAGS.resume or FLAGS.report_only):
    cli.refuse_overwrite([stem + ".json"], FLAGS.overwrite,
                         "--resume (to continue that table) or another "
                         "--output_dir")
  import jax  # after flags, so JAX_PLATFORMS etc. from the environment apply
  cli.use_compilation_cache(FLAGS.compilation_cache)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  keep = FLAGS.resume or FLAGS.report_only
  done = report.load_previous(stem + ".json", prof.name) if keep else {}
  settings = dict(seeds=list(range(FLAGS.seeds)), tasks=tasks, methods=methods,
                  overrides=over, device=jax.devices()[0].device_kind,
                  command="python -m experiments.table2 " + " ".join(sys.argv[1:]))
  payload = dict(cli.run_record(), profile=prof.name, settings=settings,
                 header=report.header_lines(prof, settings), runs=done)
  print(f"table2: profile {prof.name}, tasks {tasks}, methods {methods}, "
        f"{FLAGS.seeds} seed(s), device {settings['device']}", flush=True)
  t0 = time.perf_counter()
  if not FLAGS.report_only:
    run_all(prof, tasks, methods, FLAGS.seeds, over, done, payload,
            stem + ".json")
  shown = matching(done, prof, over)  # the JSON keeps every run
  cells = build_cells(shown, FLAGS.seeds)
  shown_tasks = [t for t in runs.TASKS if t in tasks or t in cells]
  shown_methods = [m for m in runs.METHODS
                   if m in methods or any(m in c for c in cells.values())]
  payload["cells"] = cells
  report.write_json(stem + ".json", payload)
  with open(stem + ".md", "w") as f:
    f.write(report.markdown(prof, settings, cells, shown_tasks, shown_methods))
  figs = write_figures(prof, shown_tasks, shown_methods,
                       os.path.join(FLAGS.output_dir, "figures"), shown)
  print(f"table2: {len(shown)} runs in the table, "
        f"{cli.duration(time.perf_counter() - t0)} -> {stem}.md, .json and "
        f"{len(figs)} figures in {FLAGS.output_dir}/figures", flush=True)


if __name__ == "__main__":
  cli.run_main(main)
