"""``experiments.defense_frontier``: an interrupted and resumed sweep equals
an uninterrupted one; bad flags."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--limit=4", "--batch_size=4", "--sweep=jpeg,none",
        "--jpeg_quality=30", "--threats=pgd,pgd_bpda_eot"]


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ["XLA_FLAGS"])
  return subprocess.run([sys.executable, "-m", "experiments.defense_frontier",
                         *args, f"--compilation_cache={ROOT}/.jax_cache"],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def _accuracies(path):
  table = json.loads((path / "frontier.json").read_text())
  return [(r["defense"], r["setting"], r["images"], r["accuracy"])
          for r in table["rows"]]


def test_resumed_sweep_equals_an_uninterrupted_one(cifar_dir, models_dir,
                                                   tmp_path):
  whole, parts = tmp_path / "whole", tmp_path / "parts"
  p = _run(*ARGS, f"--output_dir={whole}")
  assert p.returncode == 0, p.stderr[-3000:]
  p = _run(*ARGS, f"--output_dir={parts}", "--stop_after_rows=2")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "stopped after 2 row(s)" in p.stdout
  assert not (parts / "frontier.md").exists()
  with open(parts / "frontier.jsonl", "a") as f:   # a line cut mid-write
    f.write('{"defense": "jpeg", "sett')
  p = _run(*ARGS, f"--output_dir={parts}", "--resume")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "5 rows (3 to run)" in p.stdout
  recs = [json.loads(l) for l in
          (parts / "frontier.jsonl").read_text().splitlines()]
  keys = [(r["defense"], r["setting"], r["threat"]) for r in recs]
  assert len(keys) == len(set(keys)) == 5   # clean, pgd, adaptive; none: 2
  assert _accuracies(parts) == _accuracies(whole)
  assert ((parts / "frontier.md").read_text()
          == (whole / "frontier.md").read_text())
  assert (parts / "frontier.png").stat().st_size > 1000
  rows = {(d, s): acc for d, s, _, acc in _accuracies(whole)}
  assert set(rows) == {("jpeg", "quality=30"), ("none", "-")}
  assert rows[("none", "-")]["pgd"] == 0.0
  assert "pgd_bpda_eot" not in rows[("none", "-")]
  # A report of some threats only, running nothing.
  p = _run(*ARGS[:-1], "--threats=pgd", f"--output_dir={whole}",
           "--report_only")
  assert p.returncode == 0 and "0 to run" in p.stdout, p.stderr[-3000:]
  md = (whole / "frontier.md").read_text()
  assert "| jpeg | quality=30 | 4 |" in md and "pgd_bpda_eot" not in md.split("\n")[0]
  # Resuming with another threat model is refused; a finished run is kept.
  p = _run(*ARGS, f"--output_dir={parts}", "--resume", "--eot_samples=2")
  assert p.returncode == 2 and "settings differ" in p.stderr
  p = _run(*ARGS, f"--output_dir={parts}")
  assert p.returncode == 2 and "exists; pass --overwrite" in p.stderr


@pytest.mark.parametrize("flag,msg", [
    ("--sweep=jpeg,nope", "unknown defense"),
    ("--threats=fgsm", "unknown threat"),
    ("--dncf_grid=iterations", "--dncf_grid entry"),
    ("--dncf_grid=iterations=0", "iterations"),
])
def test_bad_flags_give_one_error_line(flag, msg, tmp_path):
  p = _run(flag, f"--output_dir={tmp_path}")
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith("error: ")
  assert msg in p.stderr
