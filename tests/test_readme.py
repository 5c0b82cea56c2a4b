"""``experiments.readme``: the README's tables are the commands' output."""

import os
import subprocess
import sys
import textwrap

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
  assert set(skipped) == {"table1_cifar10_2000_h200", "table2_cpu_small",
                          "photos_bsd20_epyc", "photos_bsd5_h200",
                          "table1_cifar10_adaptive200_epyc"}


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


# ---------------------------------------------------------------------------
# The README and docs as a user's documents
# ---------------------------------------------------------------------------

import glob  # noqa: E402
import re  # noqa: E402

DOCS = (["README.md", "benchmarks/README.md", "benchmarks/RESULTS.md", "colab/README.md"]
        + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))))
# Internal issue numbers and history; an upstream reference such as
# jax-ml/jax#12868 is allowed.
HISTORY = [re.compile(p, re.I) for p in (
    r"\bissues?\s+#?\d+", r"(?<![\w/.-])#\d+\b",
    r"\b(earlier|previous|last|this|later|next|third|second) (session|vm)s?\b",
    r"\bthe earlier\b", r"\bthis version\b", r"\bin the first version\b")]


def _readme():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    return f.read()


def test_the_readme_is_short():
  n = len(_readme().splitlines())
  assert n <= 320, f"README.md has {n} lines; reports belong in docs/"


@pytest.mark.parametrize("doc", DOCS)
def test_no_issue_numbers_or_history(doc):
  with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
    lines = f.read().splitlines()
  bad = [f"{doc}:{i + 1}: {line.strip()}" for i, line in enumerate(lines)
         for p in HISTORY if p.search(line)]
  assert not bad, "\n".join(bad)


def test_a_hand_edited_block_is_told_apart_from_the_generated_one():
  # In a process of its own: the generator imports the commands, whose
  # absl flags would clash with those of other test files' imports.
  code = textwrap.dedent("""
      from experiments import readme
      with open("README.md", encoding="utf-8") as f:
        text = f.read()
      new, skipped = readme.update(text, list(readme.BLOCKS))
      assert not skipped and new == text, "a block differs from the generator"
      for name in readme.BLOCKS:
        begin = f"<!-- generated: {name} -->\\n"
        edited = text.replace(begin, begin + "| hand | edit |\\n", 1)
        assert readme.update(edited, [name])[0] != edited, name
      # a method run on fewer photos than its task's others is left out
      import json, tempfile
      recs = [dict(task="sr", photo=f"{i}:p.png", method=m, psnr=25.0,
                   ssim=0.5, seconds=1.0) for i, m in
              [(0, "dncf"), (1, "dncf"), (0, "tv")]]
      with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(dict(records=recs), f)
        f.flush()
        rows = readme.render("photos", f.name).splitlines()[2:]
      assert rows == ["| sr | dncf | 25.00 | 0.500 | 1 | 2 |"], rows
      print("ok")
  """)
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"),
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-3000:]


def test_relative_links_of_the_readme_and_docs_exist():
  missing = []
  for doc in DOCS:
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
      text = f.read()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if re.match(r"[a-z]+:", target) or target.startswith("#"):
        continue
      path = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc),
                                           target.split("#")[0]))
      if not os.path.exists(path):
        missing.append(f"{doc}: {target}")
  assert not missing, missing


# Parsed by absl itself, in every command.
_ABSL = {"flagfile", "undefok", "help", "helpshort", "helpfull", "helpxml"}
_COMMAND = re.compile(r"python -m (experiments\.\w+)([^#`\n]*)")
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)")


def _named_commands(text):
  """(module, flags) for every ``python -m experiments.X ...`` in ``text``."""
  return [(m.group(1), _FLAG.findall(m.group(2))) for m in _COMMAND.finditer(text)]


def _defined_flags(modules):
  """The absl flags each module defines once imported (config-derived ones
  included), one subprocess per module, all at once."""
  code = ("import importlib, sys\nfrom absl import flags\n"
          "importlib.import_module(sys.argv[1])\nprint('\\n'.join(flags.FLAGS))")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  procs = {m: subprocess.Popen([sys.executable, "-c", code, m], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for m in modules}
  out = {}
  for m, p in procs.items():
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, f"import {m} failed:\n{stderr[-2000:]}"
    out[m] = set(stdout.split()) | _ABSL
  return out


def test_every_command_and_flag_the_readme_names_exists():
  text = _readme()
  commands = _named_commands(text)
  modules = sorted({m for m, _ in commands})
  assert "experiments.denoise" in modules and "experiments.fetch_data" in modules
  for m in modules:
    assert os.path.isfile(os.path.join(ROOT, *m.split(".")) + ".py"), m
  defined = _defined_flags(modules)
  bad = [f"{m} --{f}" for m, fl in commands for f in fl
         if f not in defined[m] and not (f.startswith("no") and f[2:] in defined[m])]
  assert not bad, f"flags the README names that the command does not define: {bad}"
  # flags named in the prose (`--name`) exist in at least one named command
  every = set().union(*defined.values())
  prose = {f for line in text.splitlines() if "python -m" not in line
           for f in re.findall(r"`--([a-z][a-z0-9_]*)", line)}
  assert not sorted(prose - every), sorted(prose - every)


def test_the_flag_parser_of_this_test_sees_what_it_should():
  cmds = _named_commands("    python -m experiments.sr --input=a.png --factor=4   # --nope\n"
                         "`python -m experiments.denoise --dry_run`")
  assert cmds == [("experiments.sr", ["input", "factor"]),
                  ("experiments.denoise", ["dry_run"])]


def _api_block():
  text = _readme()
  section = text[text.index("## The API"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_api_example_runs(tmp_path):
  """The API block, run as it is but for tiny settings and a small photo."""
  code = _api_block()
  tiny = code
  for old, new in (("iterations=300", "iterations=2"),
                   ("channels=32, scales=5", "channels=4, scales=1")):
    assert old in tiny, f"the README's API example no longer says {old!r}"
    tiny = tiny.replace(old, new)
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (20, 24, 3), np.uint8)).save(tmp_path / "photo.png")
  tiny += "\nassert restored.shape == obs.shape, (restored.shape, obs.shape)\n"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ["XLA_FLAGS"],
             JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  r = subprocess.run([sys.executable, "-c", tiny], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert re.search(r"\d+\.\d s", r.stdout), r.stdout
