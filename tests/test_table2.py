"""``experiments.table2``: the tiny profile end to end, resumed; the profiles' inputs; bad flags."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import table2_runs as runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ["XLA_FLAGS"])
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _table(*args):
  return _run("table2", "--flagfile=experiments/configs/table2_tiny.flags",
              f"--compilation_cache={ROOT}/.jax_cache", *args)


def _expected_cells(tasks, methods):
  return {(t, m) for t in tasks for m in methods
          if runs.applies(m, t) and t in runs.SCORED_TASKS}


def _check_table(out, tasks, methods=runs.METHODS):
  table = json.loads((out / "table2_tiny.json").read_text())
  cells = table["cells"]
  got = {(t, m) for t, by in cells.items() for m in by if t in runs.SCORED_TASKS}
  assert got == _expected_cells(tasks, methods)
  for (t, m) in got:
    cell = cells[t][m]
    keys = ["mse", "seconds"] + ([] if t == "flash" else ["psnr", "ssim"])
    keys += ["iterations"] if m != "bicubic" else []
    keys += ["oracle_psnr"] if m in runs.ITERATIVE and t != "flash" else []
    for k in keys:
      assert cell[k] is not None, (t, m, k)
      assert math.isfinite(cell[k]["mean"]) and math.isfinite(cell[k]["std"])
    n = 1 if m in runs.DETERMINISTIC else 2
    assert cell["seeds"] == list(range(n)) and cell["mse"]["n"] == n
  if "vase" in tasks:    # run (figure) but not scored in the table
    assert {"tv", "dip", "deepred", "dncf"} <= set(cells["vase"])
  md = (out / "table2_tiny.md").read_text()
  for t in set(tasks) & set(runs.SCORED_TASKS):
    assert f"| {t} |" in md
  assert "| vase |" not in md
  assert ("figure only" in md) == ("vase" in tasks)
  header = next(l for l in md.splitlines() if l.startswith("| task |"))
  for m, name in (("tv", "TV"), ("dip", "DIP"), ("deepred", "DeepRED+TV"),
                  ("dncf", "DNCF"), ("bicubic", "bicubic")):
    assert (f" {name} |" in header) == (m in methods), name
  assert "±" in md and "oracle" in md and "not the notebook's 128" in md
  return table


def _check_figures(out, tasks):
  figs = out / "figures"
  for t in tasks:
    assert (figs / f"table2_tiny_{t}_panel.png").stat().st_size > 1000
    if t not in ("flash", "vase"):
      assert (figs / f"table2_tiny_{t}_convergence.png").exists()
  if "flash" in tasks:
    assert (figs / "table2_tiny_flash_transition.png").exists()
    snaps = np.load(out / "table2_tiny_runs" / "flash_dncf_s0.npz")
    assert list(snaps["snapshot_iteration"]) == [2, 4, 6]
    assert snaps["snapshot_images"].shape == (3, 32, 32, 3)


# Every kind of scored cell at about a third of the profile's cost: sr
# (ground truth, oracle, every column with bicubic, convergence plot) and
# flash (no ground truth: MSE to the no-flash image; transition figure).
# vase (figure only) and the whole profile are the slow test below; the
# Markdown's figure-only line is tested on its own. DeepRED (about 25 s of
# compiles here) runs every task in test_baselines.py.
DEFAULT_TASKS = ("sr", "flash")
DEFAULT_METHODS = ("tv", "dip", "dncf", "bicubic")


def test_tiny_table_every_cell_figures_and_resume(data_dir, tmp_path):
  tasks = (f"--tasks={','.join(DEFAULT_TASKS)}",
           f"--methods={','.join(DEFAULT_METHODS)}")
  p = _table(*tasks, f"--output_dir={tmp_path}", f"--data_dir={data_dir}")
  assert p.returncode == 0, p.stderr[-3000:]
  table = _check_table(tmp_path, DEFAULT_TASKS, DEFAULT_METHODS)
  _check_figures(tmp_path, DEFAULT_TASKS)
  assert table["schema_version"] == 1 and table["versions"]["jax"]
  assert p.stdout.strip().splitlines()[-1].startswith("table2: ")
  # The finished table is kept: without --resume or --overwrite nothing runs.
  p = _table(*tasks, f"--output_dir={tmp_path}", f"--data_dir={data_dir}")
  assert p.returncode == 2 and p.stderr.strip() == (
      f"error: {tmp_path}/table2_tiny.json exists; pass --overwrite or "
      "--resume (to continue that table) or another --output_dir")
  assert json.loads((tmp_path / "table2_tiny.json").read_text()) == table
  # Resumed with the same settings: nothing runs again, same table.
  p = _table(*tasks, f"--output_dir={tmp_path}", f"--data_dir={data_dir}",
             "--resume")
  assert p.returncode == 0, p.stderr[-3000:]
  assert p.stdout.count("kept from the previous run") == len(table["runs"])
  again = _check_table(tmp_path, DEFAULT_TASKS, DEFAULT_METHODS)
  assert again["runs"] == table["runs"]
  # Reported for 3 seeds without running the third: the cells say so, and
  # runs made with other settings are left out of the table, not the JSON.
  p = _table(*tasks, f"--output_dir={tmp_path}", f"--data_dir={data_dir}",
             "--report_only", "--seeds=3", "--dip_iterations=7")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "kept from the previous run" not in p.stdout
  assert p.stdout.count("left out (run with other settings)") == sum(
      r["method"] == "dip" for r in table["runs"].values())
  reported = json.loads((tmp_path / "table2_tiny.json").read_text())
  assert reported["runs"] == table["runs"]
  assert "dip" not in reported["cells"]["sr"]
  assert reported["cells"]["sr"]["dncf"]["seeds"] == [0, 1]
  md = (tmp_path / "table2_tiny.md").read_text()
  assert "2 of 3 seeds" in md and "--report_only" in md


@pytest.mark.slow
def test_tiny_profile_whole_table(data_dir, tmp_path):
  p = _table(f"--output_dir={tmp_path}", f"--data_dir={data_dir}")
  assert p.returncode == 0, p.stderr[-3000:]
  _check_table(tmp_path, runs.TASKS)
  _check_figures(tmp_path, runs.TASKS)


@pytest.mark.parametrize("flag,message", [
    ("--methods=dncf,sparkle", "unknown method(s) ['sparkle']"),
    ("--tasks=denoise,deblur", "unknown task(s) ['deblur']"),
    ("--seeds=0", "--seeds must be >= 1"),
    ("--dip_iterations=0", "--dip_iterations must be >= 1"),
    ("--report_only", "--report_only: no ")])
def test_bad_flags_are_one_clear_error(flag, message, tmp_path):
  p = _table(flag, f"--output_dir={tmp_path}")
  assert p.returncode == 2
  assert f"error: {message}" in p.stderr


def test_profiles_take_dncf_settings_from_the_task_flagfiles():
  small, paper, tiny = (runs.profile(n) for n in ("cpu_small", "paper", "tiny"))
  assert runs.dncf_config("sr", small, 0).iterations == 600
  flash = runs.dncf_config("flash", small, 1)
  assert (flash.iterations, flash.feature_iterations, flash.seed) == (400, 200, 1)
  flash = runs.dncf_config("flash", paper, 0)
  assert (flash.iterations, flash.feature_iterations) == (800, 1200)
  assert runs.dncf_config("denoise", tiny, 0, {"iterations": 6}).iterations == 6
  assert runs.net_config("dip", "denoise", small, 0).net.channels == 32
  assert runs.net_config("dip", "denoise", paper, 0).net.channels == 128
  assert runs.net_config("deepred", "sr", small, 0).iterations == 2000
  assert runs.net_config("dip", "vase", tiny, 0).net.skip_channels == 0
  with pytest.raises(ValueError, match="unknown profile"):
    runs.profile("gpu")


# (The inpainting command computes its smooth fill before a dry run:
# minutes at 704x448 on a CPU, so inpainting is left out here.)
@pytest.mark.parametrize("task,module", [("sr", "sr"), ("denoise", "denoise"),
                                         ("flash", "flash")])
def test_paper_inputs_equal_what_the_task_commands_load(task, module, data_dir,
                                                        tmp_path):
  p = _run(module, f"--flagfile=experiments/configs/{task}_paper.flags",
           "--dry_run", f"--output_dir={tmp_path}", f"--data_dir={data_dir}",
           "--name=x", timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  ref = np.load(tmp_path / "x_inputs.npz")
  got = runs.task_input(task, runs.profile("paper"), data_dir)
  for k in ref.files:
    assert got[k].shape == ref[k].shape
    assert np.abs(got[k] - ref[k]).max() < 1e-6


def test_cpu_small_and_tiny_inputs(data_dir):
  from dncf_jax import io as dio
  small = runs.task_input("inpaint1", runs.profile("cpu_small"), data_dir)
  ref = dio.benchmark_input("inpaint1", data_dir)
  assert np.array_equal(small["observation"], ref["observation"])
  tiny = runs.task_input("sr", runs.profile("tiny"), data_dir)
  assert tiny["observation"].shape == (8, 8, 3)
  assert tiny["ground_truth"].shape == (32, 32, 3)


def test_markdown_tells_a_missing_cell_from_one_that_does_not_apply():
  from experiments import table2_report as report
  rec = dict(seed=0, psnr=30.0, oracle_psnr=31.0, mse=1e-3, ssim=0.9,
             seconds=12.0, iterations=100)
  cells = {"sr": {"dncf": report.aggregate([rec])}}
  settings = dict(seeds=[0], command="python -m experiments.table2 ...")
  md = report.markdown(runs.profile("tiny"), settings, cells,
                       ["sr", "denoise"], ["dncf", "bicubic"])
  rows = {l.split(" | ")[0]: l for l in md.splitlines() if l.startswith("| ")}
  assert "30.00 dB (oracle 31.00)" in rows["| sr"]
  assert rows["| sr"].endswith("| not run yet |")       # bicubic applies to sr
  assert rows["| denoise"] == "| denoise | not run yet | n/a |"
  md = report.markdown(runs.profile("tiny"), settings, cells, ["sr", "vase"],
                       ["dncf"])
  assert "| vase" not in md and "vase (object removal): no ground truth, " \
      "figure only." in md


def test_a_cell_with_fewer_seeds_than_asked_says_so():
  from experiments import table2_report as report
  recs = [dict(seed=s, psnr=30.0 + s, oracle_psnr=31.0, mse=1e-3, ssim=0.9,
               seconds=12.0, iterations=100) for s in (0, 1, 2)]
  assert report.cell_text(report.aggregate(recs[:1]), "dip", 3).endswith(
      "<br>1 of 3 seeds")
  assert report.cell_text(report.aggregate(recs), "dip", 3).endswith(
      "<br>3 seeds")
  assert "31.00 ± 0.82 dB" in report.cell_text(report.aggregate(recs), "dip", 3)
  assert "seeds" not in report.cell_text(report.aggregate(recs[:1]), "tv", 3)
