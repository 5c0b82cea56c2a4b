"""The set5 check (inputs per BENCHMARKS.md, the command, tiny) and the README gallery command."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from dncf_jax import io as dio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_set5_inputs_follow_the_protocol(data_dir):
  from PIL import Image
  den = dio.set5_inputs("denoise", data_dir)
  sr = dio.set5_inputs("sr", data_dir)
  names = ["baby", "bird", "butterfly", "head", "woman"]
  assert [n for n, _ in den] == names and [n for n, _ in sr] == names
  for i, ((name, d), (_, s)) in enumerate(zip(den, sr)):
    gt = d["ground_truth"]
    assert gt.shape == (128, 128, 3) and np.array_equal(gt, s["ground_truth"])
    full = np.asarray(Image.open(os.path.join(data_dir, "cset5", name + ".png"))
                      .convert("RGB"), np.float32) / 255
    r, c = (full.shape[0] - 128) // 2, (full.shape[1] - 128) // 2
    np.testing.assert_array_equal(gt, full[r:r + 128, c:c + 128])
    noise = np.random.default_rng(i).standard_normal(gt.shape)
    np.testing.assert_allclose(d["observation"],
                               np.clip(gt + 25 / 255 * noise, 0, 1), atol=1e-6)
    assert s["observation"].shape == (32, 32, 3)
  with pytest.raises(ValueError, match="unknown set5 task"):
    dio.set5_inputs("inpaint1", data_dir)
  with pytest.raises(FileNotFoundError, match="no images"):
    dio.set5_inputs("sr", os.path.join(data_dir, "no_such_folder"))


def _run(tmp_path, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ["XLA_FLAGS"])
  return subprocess.run(
      [sys.executable, "-m", "experiments.set5", "--profile=tiny",
       f"--output_dir={tmp_path}", f"--compilation_cache={ROOT}/.jax_cache",
       *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


# One task: the denoising run would add a compile of about 20 s, and its
# inputs are checked above.
ARGS = ("--limit=2", "--tasks=sr", "--methods=dncf,bicubic")


def test_set5_command_tiny(tmp_path, data_dir):
  p = _run(tmp_path, *ARGS)
  assert p.returncode == 0, p.stderr[-3000:]
  runs = json.loads((tmp_path / "set5_tiny.json").read_text())["runs"]
  assert set(runs) == {"sr/dncf/baby", "sr/dncf/bird",
                       "sr/bicubic/baby", "sr/bicubic/bird"}
  for rec in runs.values():   # 4 tiny iterations: plumbing, not quality
    assert math.isfinite(rec["psnr"]) and rec["psnr"] > 20
  md = (tmp_path / "set5_tiny.md").read_text()
  assert "## sr" in md and "**mean**" in md
  mean = np.mean([runs["sr/bicubic/baby"]["psnr"], runs["sr/bicubic/bird"]["psnr"]])
  assert f"**{mean:.2f}**" in md
  # --resume re-runs nothing; without it (or --overwrite) nothing runs.
  p = _run(tmp_path, *ARGS, "--resume")
  assert p.returncode == 0 and "dncf/baby:" not in p.stdout
  p = _run(tmp_path, *ARGS)
  assert p.returncode == 2 and p.stderr.strip().startswith(
      f"error: {tmp_path}/set5_tiny.json exists; pass --overwrite or --resume")


def test_set5_bad_flags(tmp_path):
  for bad in ("--methods=foo", "--tasks=inpaint1", "--limit=9"):
    p = _run(tmp_path, bad)
    assert p.returncode == 2 and p.stderr.strip().startswith("error:"), bad


def test_gallery_command_tiny(tmp_path, data_dir):
  """The README gallery's command on the tiny profile: a PNG and its numbers."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ["XLA_FLAGS"])
  out = tmp_path / "g.png"
  args = [sys.executable, "-m", "experiments.gallery", "--profile=tiny",
          "--tasks=sr,flash", f"--output_dir={tmp_path}", "--name=g",
          f"--compilation_cache={ROOT}/.jax_cache"]
  p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  payload = json.loads((tmp_path / "g.json").read_text())
  nums = payload["tasks"]
  assert set(nums) == {"sr", "flash"} and nums["sr"]["psnr"] > 10
  assert nums["flash"]["psnr"] is None and nums["flash"]["mse"] < 0.1
  assert payload["schema_version"] == 1 and payload["device"]["kind"]
  # The figure is kept unless --overwrite.
  p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=120)
  assert p.returncode == 2 and p.stderr.strip() == (
      f"error: {out} exists; pass --overwrite or another --name/--output_dir")
