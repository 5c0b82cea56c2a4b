"""The benchmarks' arithmetic: time to quality on made-up curves, purification
rate; the startup profile on a tiny denoise run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common
from benchmarks import time_to_quality as ttq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(curve, compile_s, blind_psnr=0.0, blind_s=0.0):
  curve = np.asarray(curve, float)
  return dict(curve=curve, compile_seconds=compile_s,
              best_psnr=float(curve[:, 2].max()), blind_psnr=blind_psnr,
              blind_seconds=blind_s)


def test_seconds_to_target_is_the_first_crossing():
  c = np.array([[10, 1.0, 20.0], [20, 2.0, 25.0], [30, 3.0, 24.0], [40, 4.0, 26.0]])
  assert common.seconds_to(c, 25.0) == 2.0
  assert common.iteration_to(c, 26.0) == 40
  assert common.seconds_to(c, 27.0) is None


def test_target_is_dip_best_when_dncf_reaches_it():
  dncf = _run([[10, 5.0, 28.0], [20, 6.0, 31.0]], 4.0, 30.5, 6.0)
  dip = _run([[100, 20.0, 29.0], [200, 50.0, 30.0], [300, 80.0, 29.5]], 10.0)
  c = ttq.compare(dncf, dip)
  assert c["target_is_dip_best"] and c["target_psnr"] == 30.0
  assert c["dncf_seconds_to_target"] == 6.0 and c["dip_seconds_to_target"] == 50.0
  assert c["ratio_dip_over_dncf"] == 50.0 / 6.0
  assert c["loop_ratio_dip_over_dncf"] == (50.0 - 10.0) / (6.0 - 4.0)
  assert c["dip_seconds_to_dncf_blind"] is None   # DIP never gets 30.5 dB


def test_target_falls_back_to_the_closest_either_gets():
  dncf = _run([[10, 5.0, 27.0], [20, 6.0, 28.5]], 4.0, 28.0, 5.0)
  dip = _run([[100, 20.0, 28.0], [200, 50.0, 30.0]], 10.0)
  c = ttq.compare(dncf, dip)
  assert not c["target_is_dip_best"] and c["target_psnr"] == 28.5
  assert c["dip_seconds_to_target"] == 50.0
  assert c["dip_seconds_to_dncf_blind"] == 20.0
  assert c["ratio_dip_to_dncf_blind"] == 20.0 / 5.0


def test_defense_throughput_measures_images_per_second():
  from dncf_jax import defense
  images = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype(np.float32)
  cfg = defense.DefenseConfig(mode="shared", iterations=1, channels=2)
  r = common.purify_throughput(images, cfg, batch=2, repeats=1)
  assert r["mode"] == "shared" and r["batch_size"] == 2
  assert r["first_call_seconds"] > 0 and r["images_per_second"]["median"] > 0
  with pytest.raises(ValueError, match="needs 6 images"):
    common.purify_throughput(images, cfg, batch=2, repeats=2)


def test_defense_breakdown_changes_one_setting_with_its_type():
  from dncf_jax import defense
  changed = common.changed
  base = defense.DefenseConfig()
  assert changed(base, "y_solver=none").y.solver == "none"
  assert changed(base, "channels=8").channels == 8
  assert changed(base, "norm=false").norm is False
  assert changed(base, "epsilon=0.01").epsilon == 0.01
  with pytest.raises(ValueError, match="not flag=value"):
    changed(base, "width=8")


def test_dip_reference_summary_and_clear_errors(tmp_path):
  from benchmarks import dip_reference as dr
  rows = [(50, 1.0, 25.0, 24.0), (100, 2.0, 27.0, 26.5), (150, 3.0, 26.0, 26.8)]
  s = dr.summarise(rows, ("ema", "last"), 3.0, 0.5, 10, {})
  assert s["best"]["ema"] == dict(psnr=27.0, iteration=100)
  assert s["best"]["last"] == dict(psnr=26.8, iteration=150)
  assert s["best_psnr"] == 27.0 and s["final"] == dict(ema=26.0, last=26.8)
  assert s["seconds_per_iteration"] == 3.0 / 150
  with pytest.raises(ValueError, match="--reference_dir is required"):
    dr.load_reference(None)
  with pytest.raises(FileNotFoundError, match="no models/skip.py"):
    dr.load_reference(str(tmp_path))


def test_dip_reference_jax_side_runs_the_notebook_setting():
  import dataclasses
  from benchmarks import dip_reference as dr
  from dncf_jax import baselines as bl
  rng = np.random.default_rng(0)
  gt = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  noisy = np.clip(gt + 0.1 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
  cfg = bl.dip_config("denoise", channels=4, scales=2, iterations=4,
                      checkpoint_every=2)
  r = dr.run_jax(noisy, gt, cfg)
  assert r["iterations"] == 4 and [row[0] for row in r["curve"]["rows"]] == [2, 4]
  assert set(r["best"]) == {"ema", "last"} and np.isfinite(r["best_psnr"])
  assert r["parameters"] > 0 and r["seconds_per_iteration"] > 0


def test_machine_names_the_cpu_and_its_vector_extensions():
  info = ("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n"
          "flags\t\t: fpu sse2 avx2 avx512f\n")
  assert common.cpu_model(info) == "Some CPU @ 2.0GHz [avx2 avx512f]"
  assert common.cpu_model("") == "unknown []"
  m = common.machine()
  assert m["cpus"] >= 1 and m["cpu"] and m["backend"] == "cpu"
  assert common.describe(m).endswith(f"{m['cpus']} CPUs, {m['cpu']}")


def test_startup_profile_pieces():
  from benchmarks import startup_profile as sp
  assert sp.busy_cores([(0.0, 0.0), (1.0, 1.5), (2.0, 3.5)]) == [(1.0, 1.5),
                                                                  (2.0, 2.0)]
  table = {"jit_run": {"xla_cpu_parallel_codegen_split_count": 2}}
  assert sp.options_for("jit_run", table) == table["jit_run"]
  assert sp.options_for("jit_evaluate", table) is None


def test_startup_profile_times_the_compiles_of_a_denoise_run(tmp_path):
  out, js = tmp_path / "out", tmp_path / "p.json"
  p = subprocess.run(
      [sys.executable, "-m", "benchmarks.startup_profile", f"--json={js}",
       "--", "--iterations=2", "--checkpoint_every=1", "--channels=4",
       "--scales=2", f"--output_dir={out}", "--compilation_cache="],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  r = json.loads(js.read_text())
  names = {c["program"] for c in r["compiles"]}
  assert {"jit_init", "jit_chunk"} <= names
  assert all(c["wall"] >= 0 and c["cpu"] >= 0 for c in r["compiles"])
  assert r["output_md5"] and len(r["output_md5"]) == 32
  assert r["machine"]["cpus"] >= 1 and "[" in r["machine"]["cpu"]
  assert 0 < sum(c["wall"] for c in r["compiles"]) < r["wall_seconds"]


def test_startup_profile_bad_flag_is_one_line():
  p = subprocess.run([sys.executable, "-m", "benchmarks.startup_profile",
                      "--xla_options=not json"], cwd=ROOT,
                     capture_output=True, text=True, timeout=60)
  assert p.returncode == 1 and "error: --xla_options is not JSON" in p.stderr


@pytest.mark.parametrize("flag,message", [
    ("--sizes=40x30", "at least 32x32"), ("--sizes=big", "WIDTHxHEIGHT"),
    ("--methods=whole,nope", "unknown method 'nope'")])
def test_photo_memory_bad_flags_are_one_line(flag, message):
  p = subprocess.run([sys.executable, "-m", "benchmarks.photo_memory", flag],
                     cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert p.returncode == 1 and message in p.stderr, p.stderr
  assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_photo_memory_table_shows_device_memory_where_measured():
  row = dict(size="64x48", method="whole", peak_rss_gb=1.5, seconds=3.0,
             compile_seconds=2.0, seconds_per_iteration=0.5)
  code = ("from benchmarks import photo_memory as pm; import sys, json; "
          "rows = json.loads(sys.argv[1]); print(pm.table(rows[:1])); "
          "print(pm.table(rows[1:]))")
  p = subprocess.run([sys.executable, "-c", code,
                      json.dumps([row, dict(row, peak_device_gb=2.25)])],
                     cwd=ROOT, capture_output=True, text=True, timeout=60)
  lines = p.stdout.splitlines()
  assert "| 64x48 | whole | 1.5 | - | 3.0 | 2.0 | 0.5 |" in lines, p.stderr
  assert "| 64x48 | whole | 1.5 | 2.25 | 3.0 | 2.0 | 0.5 |" in lines
  assert all(len(l.split("|")) == 9 for l in lines)
  peak = common.device_peak_bytes()   # the CPU keeps no allocator statistics
  assert peak is None or peak > 0


def test_stop_rule_finds_the_first_stop_and_the_peak():
  its = np.array([10, 20, 30, 40])
  got = common.stop_and_peak(its, [1.5, 1.0, 0.8, 0.6], [20.0, 27.0, 28.0, 26.0])
  assert got == dict(stop_iteration=20, stop_psnr=27.0, peak_iteration=30,
                     peak_psnr=28.0)
  never = common.stop_and_peak(its, [1.5, 1.2, 1.1, 1.01], [20.0, 27.0, 28.0, 26.0])
  assert never["stop_iteration"] is None and never["stop_psnr"] is None


def test_dip_breakdown_attributes_kernels_to_layers():
  from benchmarks import dip_breakdown as bd
  hlo = ('  %ynn_fusion.3 = f32[4,8]{1,0} fusion(%a), kind=kCustom, '
         'metadata={op_name="jit(run)/while/body/jvp(Skip)/Skip._block/conv_02/'
         'nhwk,ko->nhwo/dot_general" stack_frame_id=1}\n'
         '  ROOT %copy.1 = f32[4]{0} copy(%b), metadata={op_name="jit(run)/'
         'while/body/transpose(jvp(Skip))/Skip._block/bn_02/add_any"}\n')
  names = bd.op_names(hlo)
  assert set(names) == {"ynn_fusion.3", "copy.1"}
  assert bd.jax_kind(names["ynn_fusion.3"]) == ("convolution", True)
  assert bd.jax_kind(names["copy.1"]) == ("batch norm", False)
  assert bd.jax_kind("jit(run)/while/body/jvp(Skip)/Skip._block/conv_02/pad") == (
      "convolution", False)
  assert bd.jax_kind("jit(run)/while/body/jvp(Skip)/upsample2x/mul")[0] == "upsampling"
  assert bd.jax_kind("jit(run)/while/body/sqrt")[0] == bd.KINDS[-1]
  assert bd.torch_kind("aten::convolution_backward") == "convolution"
  assert bd.torch_kind("aten::reflection_pad2d") == "convolution"
  assert bd.torch_kind("aten::native_batch_norm_backward") == "batch norm"
  assert bd.torch_kind("Optimizer.step#Adam.step") == bd.KINDS[-1]


def test_dip_breakdown_profiles_the_jax_step():
  from benchmarks import dip_breakdown as bd
  from dncf_jax import baselines as bl
  noisy = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
  cfg = bl.dip_config("denoise", channels=4, scales=2)
  r = bd.run_jax(noisy, cfg, steps=2, repeats=1)
  k = r["kinds_ms"]
  assert tuple(k) == bd.KINDS
  assert k["convolution"] > 0 and k["batch norm"] > 0 and k["upsampling"] > 0
  assert 0 < r["convolution_matmul_ms"] < k["convolution"]
  # the kernels run inside the step: their times sum to about its wall time
  assert 0.2 * r["ms_per_iteration"] < sum(k.values()) < 3 * r["ms_per_iteration"]
