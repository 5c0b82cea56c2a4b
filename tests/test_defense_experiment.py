"""``experiments.defense``: a tiny Table 1 run, interrupted and resumed; bad flags."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ["XLA_FLAGS"])
  return subprocess.run([sys.executable, "-m", "experiments.defense", *args,
                         f"--compilation_cache={ROOT}/.jax_cache"],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def test_tiny_table_interrupted_and_resumed_counts_every_image_once(
    cifar_dir, models_dir, tmp_path):
  args = ["--limit=8", "--batch_size=4", "--attacks=fgsm",
          "--defenses=dncf_shared,jpeg", "--iterations=2", "--channels=4",
          "--adaptive=pgd", "--adaptive_defenses=jpeg", "--eot_samples=2",
          f"--output_dir={tmp_path}"]
  p = _run(*args, "--stop_after_batches=1")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "stopped after 1 batch" in p.stdout
  assert "images 4/8" in p.stdout and "images/s" in p.stdout
  assert "compiling" in p.stdout and "ETA" in p.stdout
  assert not (tmp_path / "table1_cifar10.md").exists()
  # A line cut by the interruption is dropped on resume.
  with open(tmp_path / "table1_cifar10.jsonl", "a") as f:
    f.write('{"row": "fgsm", "indi')
  p = _run(*args, "--resume")
  assert p.returncode == 0, p.stderr[-3000:]
  lines = (tmp_path / "table1_cifar10.jsonl").read_text().splitlines()
  recs = [json.loads(l) for l in lines]
  keys = [(r["row"], r["indices"][0]) for r in recs]
  assert len(keys) == len(set(keys)) == 6       # 3 rows x 2 batches, once each
  table = json.loads((tmp_path / "table1_cifar10.json").read_text())
  rows = {r["row"]: r for r in table["rows"]}
  assert list(rows) == ["clean", "fgsm", "pgd+bpda_eot"]
  for r in rows.values():
    assert r["images"] == 8
  idx = sorted(i for r in recs if r["row"] == "fgsm" for i in r["indices"])
  assert idx == [0, 250, 500, 750, 1000, 1250, 1500, 1750]
  assert rows["clean"]["accuracy_attacked"] > 40
  assert rows["fgsm"]["accuracy_attacked"] < rows["clean"]["accuracy_attacked"]
  assert set(rows["fgsm"]["defended"]) == {"dncf_shared", "jpeg"}
  ada = rows["pgd+bpda_eot"]["defended"]     # host JPEG, smooth JPEG backward
  assert ada["dncf_shared"] is None and ada["jpeg"] is not None
  assert ada["jpeg"] < rows["clean"]["defended"]["jpeg"]
  assert rows["fgsm"]["dncf_seconds_per_image"]["dncf_shared"] > 0
  md = (tmp_path / "table1_cifar10.md").read_text()
  assert "| fgsm | 8 |" in md and "acc. dncf_shared" in md
  assert '"learning_rate": 0.03' in md and "jpeg: smooth JPEG" in md
  assert table["schema_version"] == 1 and table["versions"]["jax"]
  assert table["device"]["backend"] == "cpu" and "time" in table
  assert p.stdout.strip().splitlines()[-1].startswith("defense: 8 images, 3 rows")
  # A finished table is kept: without --resume or --overwrite nothing runs.
  before = (tmp_path / "table1_cifar10.json").read_text()
  p = _run(*args)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert p.stderr.strip() == (f"error: {tmp_path}/table1_cifar10.json exists; "
                              "pass --overwrite or --resume (to continue that "
                              "run) or another --output_dir")
  assert (tmp_path / "table1_cifar10.json").read_text() == before
  # Resuming with other settings is refused.
  p = _run(*args[:-1], "--iterations=3", f"--output_dir={tmp_path}", "--resume")
  assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith(
      "error: --resume: settings differ")


@pytest.mark.parametrize("flag,msg", [
    ("--attacks=fgsm,nope", "unknown attack"),
    ("--input=/nonexistent.npz", "--input not found"),
    ("--iterations=0", "iterations"),
    ("--defenses=blur --adaptive_defenses=jpeg", "adaptive_defenses"),
])
def test_bad_flags_give_one_error_line(flag, msg, tmp_path):
  p = _run(*flag.split(), f"--output_dir={tmp_path}")
  assert p.returncode == 2
  lines = p.stderr.strip().splitlines()
  assert "Traceback" not in p.stderr
  assert lines[-1].startswith("error: ") and msg in lines[-1]


def test_folder_of_pngs_is_read(tmp_path):
  from PIL import Image
  from dncf_jax import io as dio
  for c, name in enumerate(["cat", "dog"]):
    (tmp_path / name).mkdir()
    for i in range(2):
      Image.fromarray(np.full((4, 4, 3), 50 * c + i, np.uint8)).save(
          tmp_path / name / f"{i}.png")
  images, labels = dio.load_labelled_images(str(tmp_path))
  assert images.shape == (4, 4, 4, 3) and labels.tolist() == [0, 0, 1, 1]
  assert abs(images[2, 0, 0, 0] - 50 / 255) < 1e-6
