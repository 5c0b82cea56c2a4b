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



# ---------------------------------------------------------------------------
# What a user sees: --help, progress, the result JSON, existing results
# ---------------------------------------------------------------------------

import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

from experiments import cli  # noqa: E402  (defines no flags)

COMMANDS = ("denoise", "sr", "inpaint", "flash", "defense", "table2", "set5",
            "gallery", "convexify", "baselines_check", "readme", "fetch_data",
            "photos")


def _help_entries(text: str) -> dict[str, str]:
  """``{flag: help text}`` of absl's ``--help`` output."""
  out, name = {}, None
  for line in text.splitlines():
    m = re.match(r"  --(?:\[no\])?(\w+): (.*)", line)
    if m:
      name = m.group(1)
      out[name] = re.sub(r"^<[^>]*>: ", "", m.group(2))
    elif name and line.startswith("    ") and not line.strip().startswith("("):
      out[name] += " " + line.strip()
    else:
      name = None
  return out


def test_help_lists_the_commands_flags_with_their_help():
  p = _run("denoise", "--help")
  assert p.returncode == 1 and not p.stderr, p.stderr[-2000:]  # absl's exit code
  entries = _help_entries(p.stdout)
  assert entries["iterations"] == "theta-steps in the image phase."
  assert entries["channels"] == "Channels of every scale of the skip net."
  assert entries["input"].startswith("Input image (PNG/JPEG).")
  for name in ("output_dir", "overwrite", "synthetic_sigma", "y_solver",
               "noise_sigma", "learning_rate"):
    assert len(entries[name]) > 15, (name, entries[name])
  assert "DNCFConfig field" not in p.stdout


def test_inpaint_defaults_to_the_biharmonic_fill_and_50_iterations():
  # measured on masks of every kind: benchmarks/inpaint_masks.py
  p = _run("inpaint", "--help")
  for flag, default in (("fill", "biharmonic"), ("iterations", "50"),
                        ("y_handicap", "0.0"), ("project", "true")):
    entry = re.search(rf"\n  --(?:\[no\])?{flag}: (.*?)\n  --", p.stdout, re.S)
    assert f"(default: '{default}')" in entry.group(1), (flag, entry)


def test_every_command_lists_its_flags_in_help_one_name_per_concept():
  """Each command's flags (config-derived ones included) are key flags of
  the command, so ``--help`` shows them, each with a help text; a concept
  has one flag name across the commands."""
  code = ("import importlib, json, sys\nfrom absl import flags\n"
          "mod = importlib.import_module('experiments.' + sys.argv[1])\n"
          "own = {f.name for m, fl in flags.FLAGS.flags_by_module_dict().items()"
          " if m.startswith('experiments') for f in fl}\n"
          "key = {f.name: f.help for f in flags.FLAGS.get_key_flags_for_module(mod)}\n"
          "print(json.dumps(dict(missing=sorted(own - set(key)), own=sorted(own),"
          " short=sorted(n for n, h in key.items() if len(h or '') < 12))))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  procs = {m: subprocess.Popen([sys.executable, "-c", code, m], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
           for m in COMMANDS}
  names = set()
  for m, p in procs.items():
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"{m}: {err[-2000:]}"
    got = json.loads(out)
    assert got["missing"] == [] and got["short"] == [], (m, got)
    names |= set(got["own"])
  for old in ("lr", "data", "models", "images", "steps", "cvxr_gamma",
              "output"):
    assert old not in names, old
  assert {"learning_rate", "data_dir", "models_dir", "output_dir", "overwrite",
          "limit", "iterations", "adaptive_gamma", "batch_norm"} <= names


def test_a_run_reports_progress_writes_its_record_and_keeps_its_results(
    tmp_path):
  args = ["--iterations=2", "--channels=4", "--scales=2",
          "--checkpoint_every=1", f"--output_dir={tmp_path}",
          f"--compilation_cache={ROOT}/.jax_cache"]
  env = dict(XLA_FLAGS=os.environ["XLA_FLAGS"])
  p = _run_env(env, "denoise", *args)
  assert p.returncode == 0, p.stderr[-3000:]
  lines = p.stdout.strip().splitlines()
  assert lines[1].startswith("compiling (first run of this shape")
  took = r"(?:\d+ s|\d+:\d\d)"   # cli.duration: 42 s, or 1:23 past a minute
  assert re.search(rf"it +1/2, {took} elapsed, ETA {took}, ", p.stdout)
  assert "ran the full budget of 2 iterations" in p.stdout
  path = tmp_path / "denoise_astronaut.json"
  assert re.fullmatch(
      r"denoise_astronaut: PSNR \d+\.\d\d dB, SSIM \d\.\d{3}, chose .+ @ 2 "
      r"\(averaged with non-local means and wavelet shrinkage, weight 0\.75\), "
      r"\d+\.\d s \(compile \d+\.\d s\) -> " + re.escape(str(path)), lines[-1])
  assert "libtpu" not in p.stderr and "initialize backend" not in p.stderr
  rec = json.loads(path.read_text())
  assert rec["schema_version"] == 1
  assert rec["device"]["kind"] and rec["device"]["backend"] == "cpu"
  assert set(rec["versions"]) == {"dncf_jax", "jax", "jaxlib", "flax", "optax",
                                  "numpy", "python"}
  assert all(rec["versions"].values())
  assert rec["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", rec["commit"])
  when = datetime.datetime.fromisoformat(rec["time"])
  assert when.utcoffset() == datetime.timedelta(0)
  assert "noise_sigma_used" not in rec and 20 < rec["noise_sigma_255"] < 30
  assert rec["stopped_early"] is False and rec["iterations"] == 2
  assert rec["fused"] == 0.75 and rec["fused_with"] == "nlm_wavelet"
  # A second run stops before any work, with one line, and keeps the first.
  before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
  p = _run_env(env, "denoise", *args)
  assert p.returncode == 2
  assert p.stderr.strip() == (f"error: {path} exists; pass --overwrite or "
                              "another --name/--output_dir")
  assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before
  # --overwrite replaces it; a known sigma is given and stored on 0-255;
  # as 9 tiles of 64 pixels, 3 at a time, blended, the answer is the whole
  # run's within 0.5 dB (most of it the classical pair's, at two iterations)
  p = _run_env(env, "denoise", *args, "--overwrite", "--noise_sigma=25",
               "--tile=64", "--tile_overlap=16", "--tiles_in_flight=4")
  assert p.returncode == 0, p.stderr[-3000:]
  again = json.loads(path.read_text())
  assert again["noise_sigma_255"] == pytest.approx(25.0)
  assert "sigma 25.0/255" in p.stdout and again["time"] >= rec["time"]
  assert p.stdout.startswith("denoise_astronaut: as 9 tiles of 64 pixels, "
                             "overlap 16, 3 at a time\n")
  assert "[image, tiles 1-3 of 9] it    2/2" in p.stdout
  for tiles in ("4-6", "7-9"):   # time left at the pace of the parts done
    assert re.search(rf"\[image, tiles {tiles} of 9, about [\d:]+(?: s)? "
                     r"left\] it    2/2", p.stdout), p.stdout
  assert again["tiles"] == 9 and again["tile"] == 64
  assert abs(again["psnr"] - rec["psnr"]) < 0.5, (again["psnr"], rec["psnr"])


def test_large_photos_run_as_tiles_and_bad_tiles_are_a_clear_error(
    data_dir, tmp_path):
  """The whole image up to 2^20 scene pixels, tiles of 256 above, at most
  2^19 pixels of them at a time; a tile the downsampler cannot take is one
  line."""
  args = ["--input=dip/kate.png", f"--data_dir={data_dir}", "--dry_run",
          f"--output_dir={tmp_path}"]
  big = _run("denoise", *args, "--resize=1100x1000")
  assert big.returncode == 0, big.stderr[-2000:]
  assert big.stdout.splitlines()[0] == ("denoise: as 25 tiles of 256 pixels, "
                                        "overlap 32, 7 at a time")
  whole = _run("denoise", *args, "--resize=1024x1024", "--overwrite")
  assert whole.returncode == 0 and " tiles of " not in whole.stdout
  bad = _run("sr", *args, "--downsample_input", "--tile=30")
  assert bad.returncode == 2 and bad.stderr.strip() == (
      "error: tile must be >= 2 and a multiple of the scale factor 4, got 30")


def _run_env(extra_env, module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra_env)
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def test_stop_reason_summary_and_durations():
  early, why = cli.stop_reason(70, 300, 24.94, 0.9, True)
  assert early and why == ("stopped early at iteration 70 of 300: the "
                           "discrepancy principle was met (residual <= tau "
                           "sigma^2, tau 0.9, sigma 24.9/255)")
  assert cli.stop_reason(600, 600, 0.0, 0.9, True) == (
      False, "ran the full budget of 600 iterations (noiseless task: no "
      "stopping rule, the best fit is returned)")
  assert "early stopping off" in cli.stop_reason(5, 5, 25.0, 0.9, False)[1]
  out = dict(psnr=28.4137, ssim=0.81234, chosen="ema f(y)",
             chosen_iteration=240, seconds=31.24, compile_seconds=20.06)
  assert cli.summary("denoise", out, "outputs/denoise.json") == (
      "denoise: PSNR 28.41 dB, SSIM 0.812, chose ema f(y) @ 240, 31.2 s "
      "(compile 20.1 s) -> outputs/denoise.json")
  flash = dict(out, psnr=None, ssim=None, mse_to_observation=6.81e-4)
  assert "MSE to the observation 6.81e-04, chose" in cli.summary("f", flash, "x")
  assert [cli.duration(s) for s in (4.4, 59.6, 187, 3729)] == [
      "4 s", "1:00", "3:07", "1:02:09"]
  info = dict(iteration=50, total=600, seconds=12.3, its_per_second=8.0)
  assert cli.progress_line(info) == "it   50/600, 12 s elapsed, ETA 1:09, 8.00 it/s"
  assert cli.eta(dict(info, its_per_second=0.0)) is None


def test_refuse_overwrite_names_the_file(tmp_path):
  f = tmp_path / "a.json"
  cli.refuse_overwrite([str(f)], False)
  f.write_text("{}")
  cli.refuse_overwrite([str(f)], True)
  with pytest.raises(FileExistsError, match=r"a\.json exists; pass --overwrite"):
    cli.refuse_overwrite([str(tmp_path / "b.png"), str(f)], False)


def test_run_record_outside_git(tmp_path):
  assert cli.git_commit(str(tmp_path)) is None
  rec = cli.run_record()
  assert rec["schema_version"] == cli.SCHEMA_VERSION == 1
  assert json.loads(json.dumps(rec)) == rec


def test_absent_platform_lines_are_quiet_real_errors_are_not():
  import logging
  seen = []

  class Keep(logging.Handler):
    def emit(self, record):
      seen.append(record.getMessage())

  logger = logging.getLogger("jax._src.xla_bridge")
  handler, level = Keep(), logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    logger.info("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
    logger.warning("An NVIDIA GPU may be present on this machine, but a "
                   "CUDA-enabled jaxlib is not installed. Falling back to cpu.")
    logger.warning("CUDA backend failed to initialize: out of memory.")
    logger.error("Unable to initialize backend 'cuda': broken")
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  assert seen == ["CUDA backend failed to initialize: out of memory.",
                  "Unable to initialize backend 'cuda': broken"]
