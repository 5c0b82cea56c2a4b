"""Peak memory and seconds of denoising one large photo, whole against tiled.

    python -m benchmarks.photo_memory                                   # 1536x1024
    python -m benchmarks.photo_memory --sizes=4000x3000 --methods=tiles

The input is the bundled sample photo resized (Lanczos) to each
``--sizes`` entry (width x height) with σ 25 Gaussian noise
(``default_rng(0)``), denoised with the default configuration for a fixed
``--iterations`` (no early stop, so every method does the same work per
pixel). ``whole``: :func:`dncf_jax.restore` on the whole image; ``tiles``:
:func:`dncf_jax.tiles.restore_tiled` (``--tile``, ``--tile_overlap``) with
``--batch_size`` tiles in flight. Each (size, method) runs in a process
of its own, so its peak resident memory (``getrusage``) and, on an
accelerator, its peak device memory are its own; a run
that fails (out of memory) is recorded as such. Prints a Markdown table
with the whole/tiles ratio of peak memory and writes JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from absl import app, flags
import numpy as np

from benchmarks.common import (describe, device_peak_bytes, machine,
                               peak_rss_mb, write_json)

FLAGS = flags.FLAGS

flags.DEFINE_list("sizes", ["1536x1024"], "Photo sizes, WIDTHxHEIGHT.")
flags.DEFINE_list("methods", ["whole", "tiles"], "Among whole, tiles.")
flags.DEFINE_integer("iterations", 10, "DNCF iterations (no early stop).")
flags.DEFINE_integer("tile", 256, "Tile side of the tiled run.")
flags.DEFINE_integer("tile_overlap", 32, "Overlap of neighbouring tiles.")
flags.DEFINE_integer("batch_size", 4, "Tiles in flight.")
flags.DEFINE_integer("timeout", 3600, "Seconds allowed per run.")
flags.DEFINE_string("child", None, "Internal: run one SIZE,METHOD and print JSON.")
flags.DEFINE_string("output", "benchmarks/results/photo_memory.json", "JSON path.")

METHODS = ("whole", "tiles")


def parse_size(text: str) -> tuple[int, int]:
  """``"1536x1024"`` -> (width, height)."""
  try:
    w, h = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ValueError(f"a size is WIDTHxHEIGHT, got {text!r}") from None
  if w < 32 or h < 32:
    raise ValueError(f"sizes must be at least 32x32, got {text!r}")
  return w, h


def photo(width: int, height: int) -> np.ndarray:
  """The noisy input of the module docstring (H, W, 3) in [0, 1]."""
  from PIL import Image
  from dncf_jax import io as dio
  im = Image.fromarray((dio.sample_image() * 255 + 0.5).astype(np.uint8))
  clean = np.asarray(im.resize((width, height), Image.LANCZOS),
                     np.float32) / 255.0
  noise = np.random.default_rng(0).standard_normal(clean.shape)
  return np.clip(clean + 25 / 255 * noise, 0, 1).astype(np.float32)


def run_one(size: str, method: str) -> dict:
  """One restoration in this process: seconds and peak memory."""
  import jax
  import dncf_jax as dn
  from dncf_jax import physics, tiles
  obs = photo(*parse_size(size))
  cfg = dn.DNCFConfig().replace(iterations=FLAGS.iterations, early_stop=False)
  t = time.perf_counter()
  if method == "whole":
    r = dn.restore(obs, physics.Denoise(), cfg, jax.random.key(0))
    compile_s, extra = r.compile_seconds, {}
  else:
    r = tiles.restore_tiled(obs, physics.Denoise(), cfg, jax.random.key(0),
                            tiles.TileConfig(FLAGS.tile, FLAGS.tile_overlap),
                            batch_size=FLAGS.batch_size)
    compile_s, extra = r.compile_seconds, dict(tiles=len(r.starts))
  seconds = time.perf_counter() - t
  peak = device_peak_bytes()
  if peak is not None:
    extra["peak_device_gb"] = round(peak / 2 ** 30, 2)
  return dict(size=size, method=method, seconds=round(seconds, 1),
              compile_seconds=round(compile_s, 1),
              seconds_per_iteration=round((seconds - compile_s)
                                          / FLAGS.iterations, 2),
              peak_rss_gb=round(peak_rss_mb() / 1024, 2), **extra)


def spawn(size: str, method: str) -> dict:
  """:func:`run_one` in a fresh process."""
  args = [sys.executable, "-m", "benchmarks.photo_memory",
          f"--child={size},{method}", f"--iterations={FLAGS.iterations}",
          f"--tile={FLAGS.tile}", f"--tile_overlap={FLAGS.tile_overlap}",
          f"--batch_size={FLAGS.batch_size}"]
  try:
    p = subprocess.run(args, capture_output=True, text=True,
                       timeout=FLAGS.timeout)
  except subprocess.TimeoutExpired:
    return dict(size=size, method=method, failed=f"over {FLAGS.timeout} s")
  lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
  if p.returncode or not lines:
    tail = (p.stderr.strip().splitlines() or ["killed"])[-1]
    return dict(size=size, method=method,
                failed=f"exit {p.returncode}: {tail[:200]}")
  return json.loads(lines[-1])


def table(rows: list[dict]) -> str:
  out = ["| size | method | peak RSS (GB) | peak device (GB) | seconds "
         "| of which compiling | s / iteration |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    if "failed" in r:
      out.append(f"| {r['size']} | {r['method']} | failed: {r['failed']} | | | | |")
    else:
      name = r["method"] + (f" ({r['tiles']} tiles)" if "tiles" in r else "")
      out.append(f"| {r['size']} | {name} | {r['peak_rss_gb']} "
                 f"| {r.get('peak_device_gb', '-')} | {r['seconds']} "
                 f"| {r['compile_seconds']} | {r['seconds_per_iteration']} |")
  return "\n".join(out)


def main(argv):
  del argv
  if FLAGS.child:
    size, method = FLAGS.child.split(",")
    print(json.dumps(run_one(size, method)))
    return
  bad = [m for m in FLAGS.methods if m not in METHODS]
  if bad:
    raise SystemExit(f"error: unknown method {bad[0]!r}; choose among {METHODS}")
  try:
    for s in FLAGS.sizes:
      parse_size(s)
  except ValueError as e:
    raise SystemExit(f"error: --sizes: {e}")
  rows = []
  for s in FLAGS.sizes:
    for m in FLAGS.methods:
      rows.append(spawn(s, m))
      print(json.dumps(rows[-1]), flush=True)
  where = machine()
  print(f"\n{describe(where)}, {FLAGS.iterations} iterations\n")
  print(table(rows))
  for s in FLAGS.sizes:
    by = {r["method"]: r for r in rows if r["size"] == s and "failed" not in r}
    if len(by) == 2:
      print(f"{s}: whole / tiles peak memory = "
            f"{by['whole']['peak_rss_gb'] / by['tiles']['peak_rss_gb']:.2f}x")
  write_json(FLAGS.output, dict(machine=where, iterations=FLAGS.iterations,
                                tile=FLAGS.tile, tile_overlap=FLAGS.tile_overlap,
                                batch_size=FLAGS.batch_size, rows=rows))


if __name__ == "__main__":
  app.run(main)
