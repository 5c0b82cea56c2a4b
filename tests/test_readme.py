"""``experiments.readme``: the README's tables are the commands' output."""

import os
import subprocess
import sys

import pytest

from experiments import readme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmd(*args):
  return subprocess.run([sys.executable, "-m", "experiments.readme", *args],
                        cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_splice_replaces_one_block_and_refuses_zero_or_two():
  text = "a\n<!-- generated: t -->\nold\n<!-- end generated: t -->\nb\n"
  assert readme.splice(text, "t", "new\n") == (
      "a\n<!-- generated: t -->\nnew\n<!-- end generated: t -->\nb\n")
  with pytest.raises(ValueError, match="has 0 blocks"):
    readme.splice(text, "u", "x")
  with pytest.raises(ValueError, match="has 2 blocks"):
    readme.splice(text + text, "t", "x")


def test_update_renders_table2_markdown_and_skips_missing_sources(tmp_path):
  src = tmp_path / "benchmarks" / "results"
  src.mkdir(parents=True)
  (src / "table2_paper_h100.md").write_text("# Title\n\n| a |\n|---|\n| 1 |\n")
  text = "".join(f"<!-- generated: {n} -->\nx\n<!-- end generated: {n} -->\n"
                 for n in readme.BLOCKS)
  new, skipped = readme.update(text, list(readme.BLOCKS), root=str(tmp_path))
  assert "| a |\n|---|\n| 1 |\n<!-- end generated: table2_paper_h100 -->" in new
  assert "# Title" not in new
  assert set(skipped) == {"table1_cifar10_2000_h200", "table2_cpu_small"}


def test_the_readme_tables_are_up_to_date_and_a_hand_edit_fails(tmp_path):
  r = _cmd("--check")
  assert r.returncode == 0, r.stdout + r.stderr
  assert "is up to date" in r.stdout
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  edited = tmp_path / "README.md"
  edited.write_text(text.replace("| pgd | 2000 | 1.0 | 0.00 | 53.30",
                                 "| pgd | 2000 | 1.0 | 0.00 | 63.30"))
  r = _cmd("--check", f"--readme={edited}")
  assert r.returncode == 1 and "not up to date" in r.stdout
  r = _cmd("--blocks=nope")
  assert r.returncode != 0 and "error: unknown block(s) ['nope']" in r.stderr + r.stdout
