"""The command-line entry points: flagfiles reproduce BENCHMARKS.md, bad input errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

from dncf_jax import io as dio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                        cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("flagfile,module,task", [
    ("denoise", "denoise", "denoise"), ("sr", "sr", "sr"),
    ("inpaint1", "inpaint", "inpaint1"), ("inpaint2", "inpaint", "inpaint2"),
    ("flash", "flash", "flash")])
def test_flagfiles_reproduce_the_benchmark_inputs(flagfile, module, task,
                                                  data_dir, tmp_path):
  p = _run(module, f"--flagfile=experiments/configs/{flagfile}_cpu_small.flags",
           "--dry_run", f"--output_dir={tmp_path}", f"--data_dir={data_dir}",
           "--name=x")
  assert p.returncode == 0, p.stderr[-2000:]
  got = np.load(tmp_path / "x_inputs.npz")
  ref = dio.benchmark_input(task, data_dir)
  assert got["observation"].shape == ref["observation"].shape
  assert np.abs(got["observation"] - ref["observation"]).max() < 1e-6
  if "ground_truth" in ref:
    assert np.abs(got["ground_truth"] - ref["ground_truth"]).max() < 1e-6


# The other paper flagfiles differ from their cpu_small twins only by
# dropping --resize/--crop; one subprocess each costs seconds, so three.
@pytest.mark.parametrize("flagfile,module,shape", [
    ("sr_paper", "sr", (96, 144, 3)),
    ("vase_cpu_small", "inpaint", (128, 128, 3)),
    ("flash_paper", "flash", (706, 774, 3))])
def test_paper_flagfiles_load_their_full_size_inputs(flagfile, module, shape,
                                                     data_dir, tmp_path):
  p = _run(module, f"--flagfile=experiments/configs/{flagfile}.flags",
           "--dry_run", f"--output_dir={tmp_path}", f"--data_dir={data_dir}",
           "--name=x")
  assert p.returncode == 0, p.stderr[-2000:]
  assert np.load(tmp_path / "x_inputs.npz")["observation"].shape == shape


def test_missing_file_is_a_clear_error(tmp_path):
  p = _run("denoise", "--input=no_such_image.png", "--dry_run",
           f"--output_dir={tmp_path}")
  assert p.returncode != 0
  assert "file not found: no_such_image.png" in p.stderr


def test_unknown_flag_value_is_a_clear_error(tmp_path):
  p = _run("denoise", "--y_solver=newton", "--dry_run", f"--output_dir={tmp_path}")
  assert p.returncode != 0
  assert "y_solver" in p.stderr and "newton" in p.stderr
  p = _run("sr", "--input=x.png", "--kernel=box", f"--output_dir={tmp_path}")
  assert p.returncode != 0 and "kernel" in p.stderr


def test_mask_of_another_size_is_a_clear_error(data_dir, tmp_path):
  p = _run("inpaint", "--input=dip/kate.png", "--mask=dip/library_mask.png",
           f"--data_dir={data_dir}", "--dry_run", f"--output_dir={tmp_path}")
  assert p.returncode != 0
  assert "the mask is 704x448 but the image is 512x512" in p.stderr


def test_size_the_downsampler_cannot_take_is_a_clear_error(data_dir, tmp_path):
  p = _run("sr", "--input=dip/zebra_GT.png", "--crop=0:130,0:128",
           "--downsample_input", f"--data_dir={data_dir}", "--dry_run",
           f"--output_dir={tmp_path}")
  assert p.returncode != 0
  assert "cannot be downsampled by 4" in p.stderr


def test_default_denoise_run_needs_no_download(tmp_path):
  p = _run("denoise", "--dry_run", f"--output_dir={tmp_path}")
  assert p.returncode == 0, p.stderr[-2000:]
  got = np.load(tmp_path / "denoise_astronaut_inputs.npz")
  assert got["observation"].shape == (128, 128, 3)
  noise = got["observation"] - got["ground_truth"]
  assert 0.08 < noise.std() < 0.1

