"""The README's tables, as the commands wrote them: ``python -m experiments.readme``.

A generated block of the README sits between two comment lines,

    <!-- generated: NAME -->
    ...
    <!-- end generated: NAME -->

and :data:`BLOCKS` says where each NAME comes from: a Markdown table
written by ``experiments.table2`` (its title line dropped), a Table 1
JSON of ``experiments.defense``, rendered by its own ``to_markdown``, or
``photos.json`` files of ``experiments.photos`` (the means over their
photos, one table for all of them; a method run on fewer photos than
the most of its task is left out, its mean not comparable).
This command replaces every block whose sources exist (a missing source
is reported and its block left alone); ``--check`` changes nothing and
exits with status 1 if the README differs from what it would write (a
test runs it, so a hand-edited table fails CI).
"""

from __future__ import annotations

import json
import os
import re
import sys

from absl import flags

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# NAME -> (kind, source paths relative to the repository root)
BLOCKS = {
    "table1_cifar10_2000_h200": ("table1", "benchmarks/results/table1_cifar10_2000_h200.json"),
    "table1_cifar10_adaptive200_epyc": ("table1", "benchmarks/results/table1_cifar10_adaptive200_epyc.json"),
    "table2_paper_h100": ("table2", "benchmarks/results/table2_paper_h100.md"),
    "table2_cpu_small": ("table2", "benchmarks/results/table2_cpu_small.md"),
    "photos_bsd5_h200": ("photos", "benchmarks/results/photos_bsd5_h200.json"),
    "photos_bsd20_epyc": ("photos", "benchmarks/results/photos_bsd20_denoise25_epyc.json",
                          "benchmarks/results/photos_bsd20_denoise25_wavelet_epyc.json",
                          "benchmarks/results/photos_bsd20_denoise50_epyc.json",
                          "benchmarks/results/photos_bsd20_denoise50_wavelet_epyc.json",
                          "benchmarks/results/photos_bsd20_denoise_default_epyc.json",
                          "benchmarks/results/photos_bsd20_sr_epyc.json",
                          "benchmarks/results/photos_bsd20_inpaint_epyc.json"),
}

FLAGS = flags.FLAGS
flags.DEFINE_string("readme", os.path.join(ROOT, "README.md"),
                    "The README to update (or --check).")
flags.DEFINE_list("blocks", list(BLOCKS), "Blocks to regenerate.")
flags.DEFINE_boolean("check", False, "Exit 1 if the README is not up to date.")


def _markers(name: str) -> tuple[str, str]:
  return f"<!-- generated: {name} -->", f"<!-- end generated: {name} -->"


def splice(text: str, name: str, content: str) -> str:
  """``text`` with the block ``name`` holding ``content`` (one block, or a ValueError)."""
  begin, end = _markers(name)
  pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
  found = pattern.findall(text)
  if len(found) != 1:
    raise ValueError(f"the README has {len(found)} blocks {begin!r} ... "
                     f"{end!r}; it needs exactly one")
  return pattern.sub(lambda _: f"{begin}\n{content.rstrip()}\n{end}", text)


def render(kind: str, *paths: str) -> str:
  """The Markdown of a block's sources (see :data:`BLOCKS`)."""
  if kind == "photos":
    from collections import Counter
    from experiments.photos_report import METHODS, label, summary
    recs = []
    for path in paths:
      with open(path) as f:
        recs += json.load(f)["records"]
    n = Counter((r["task"], label(r)) for r in recs)
    most = {t: max(k for (u, _), k in n.items() if u == t) for t, _ in n}
    recs = [r for r in recs if n[r["task"], label(r)] == most[r["task"]]]
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    return summary(recs, tasks, [m for m in METHODS
                                 if any(r["method"] == m for r in recs)]) + "\n"
  (path,) = paths
  with open(path) as f:
    raw = f.read()
  if kind == "table1":
    from experiments.defense import to_markdown
    table = json.loads(raw)
    return to_markdown(table, table["meta"]["defenses"], table["meta"])
  lines = raw.splitlines()
  if lines and lines[0].startswith("# "):   # the file's own title
    lines = lines[1:]
  return "\n".join(lines).strip() + "\n"


def update(text: str, names: list[str], root: str = ROOT) -> tuple[str, list[str]]:
  """``text`` with every block in ``names`` whose source exists regenerated;
  also the names skipped for want of a source."""
  skipped = []
  for name in names:
    kind, *rels = BLOCKS[name]
    paths = [os.path.join(root, rel) for rel in rels]
    if not all(os.path.isfile(p) for p in paths):
      skipped.append(name)
      continue
    text = splice(text, name, render(kind, *paths))
  return text, skipped


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  bad = [b for b in FLAGS.blocks if b not in BLOCKS]
  if bad:
    raise ValueError(f"unknown block(s) {bad}; choose from {list(BLOCKS)}")
  if not os.path.isfile(FLAGS.readme):
    raise FileNotFoundError(f"no README at {FLAGS.readme}")
  with open(FLAGS.readme) as f:
    text = f.read()
  new, skipped = update(text, FLAGS.blocks)
  for name in skipped:
    print(f"{name}: a source of {BLOCKS[name][1:]} is missing; block left "
          "as it is")
  if FLAGS.check:
    if new != text:
      print(f"{FLAGS.readme} is not up to date: run python -m experiments.readme")
      sys.exit(1)
    print(f"{FLAGS.readme} is up to date")
    return
  if new != text:
    with open(FLAGS.readme, "w") as f:
      f.write(new)
  print(f"{'updated' if new != text else 'unchanged'}: {FLAGS.readme}")


if __name__ == "__main__":
  cli.run_main(main)
