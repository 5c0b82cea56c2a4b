"""Where a command's first result waits: ``python -m benchmarks.startup_profile``.

Runs ``python -m experiments.denoise`` (or ``--module``) in this process
with every ahead-of-time compilation timed (wall and CPU seconds, by the
program's name: ``jit_init`` = the inputs, ``net.init`` and the solver
state, ``jit_chunk`` = a chunk of steps and its checkpoint) and the
process's CPU use sampled every second (cores busy: 1.0 = one core), then
prints them and writes JSON. Flags after ``--`` go to the command, e.g.

    python -m benchmarks.startup_profile -- --compilation_cache=/tmp/cc --output_dir=/tmp/nf

``--xla_options='{"jit_chunk": {"xla_cpu_parallel_codegen_split_count": 2}}'``
compiles the programs whose name contains a key with those XLA options
(to try a compiler setting on one program; they can change the numbers).
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
import threading
import time
from typing import Optional

from benchmarks.common import describe, machine


def cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def busy_cores(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
  """(end of interval s, cores busy) from (wall, cpu) samples."""
  return [(round(b[0], 1), round((b[1] - a[1]) / (b[0] - a[0]), 2))
          for a, b in zip(samples, samples[1:]) if b[0] > a[0]]


def options_for(name: str, table: dict) -> Optional[dict]:
  """The XLA options of the first key of ``table`` in ``name``, or None."""
  for key, opts in table.items():
    if key in name:
      return dict(opts)
  return None


def program_name(lowered) -> str:
  """The module's name (``jit_<function>``), read from its MLIR attribute
  rather than by printing the whole program."""
  return str(lowered.compiler_ir().operation.attributes["sym_name"]).strip('"')


def profile(module: str, argv: list[str], xla_options: dict) -> dict:
  """Runs ``module``'s main with ``argv``; the timings."""
  import jax
  t0 = time.perf_counter()
  c0 = cpu_seconds()
  compiles = []
  original = jax.stages.Lowered.compile

  def timed_compile(self, compiler_options=None, **kw):
    name = program_name(self)
    extra = options_for(name, xla_options)
    if extra:
      compiler_options = dict(compiler_options or {}, **extra)
    t, c = time.perf_counter(), cpu_seconds()
    out = original(self, compiler_options, **kw)
    compiles.append(dict(program=name, start=t - t0,
                         wall=time.perf_counter() - t,
                         cpu=cpu_seconds() - c, options=extra))
    return out

  samples = [(0.0, 0.0)]
  done = threading.Event()

  def sample():
    while not done.wait(1.0):
      samples.append((time.perf_counter() - t0, cpu_seconds() - c0))

  threading.Thread(target=sample, daemon=True).start()
  jax.stages.Lowered.compile = timed_compile
  saved = sys.argv
  sys.argv = [module] + argv
  try:
    runpy.run_module(module, run_name="__main__")
  except SystemExit as e:
    if e.code not in (None, 0):
      raise
  finally:
    sys.argv = saved
    jax.stages.Lowered.compile = original
    done.set()
  return dict(module=module, argv=argv, xla_options=xla_options,
              wall_seconds=time.perf_counter() - t0,
              cpu_seconds=cpu_seconds() - c0, compiles=compiles,
              busy_cores=busy_cores(samples), machine=machine())


def output_digest(output_dir: Optional[str]) -> Optional[str]:
  """md5 of the ``*_result.png`` files written (same bits, same output)."""
  if not output_dir or not os.path.isdir(output_dir):
    return None
  h = hashlib.md5()
  names = sorted(n for n in os.listdir(output_dir) if n.endswith("_result.png"))
  for n in names:
    with open(os.path.join(output_dir, n), "rb") as f:
      h.update(f.read())
  return h.hexdigest() if names else None


def main() -> None:
  args = sys.argv[1:]
  passed = args[args.index("--") + 1:] if "--" in args else []
  own = args[:args.index("--")] if "--" in args else args
  opts = dict(module="experiments.denoise", xla_options="{}",
              json="benchmarks/results/startup_profile.json")
  for a in own:
    key, _, value = a.lstrip("-").partition("=")
    if key not in opts or not value:
      raise SystemExit(f"error: unknown or empty flag {a!r} (flags: "
                       f"--module, --xla_options, --json; the command's "
                       f"flags go after --)")
    opts[key] = value
  try:
    xla_options = json.loads(opts["xla_options"])
  except json.JSONDecodeError as e:
    raise SystemExit(f"error: --xla_options is not JSON: {e}")
  result = profile(opts["module"], passed, xla_options)
  out_dir = next((a.split("=", 1)[1] for a in passed
                  if a.startswith("--output_dir=")), None)
  result["output_md5"] = output_digest(out_dir)
  for c in result["compiles"]:
    if c["wall"] >= 0.05:
      print(f"compile {c['program']:<28s} from {c['start']:6.1f} s: "
            f"{c['wall']:6.2f} s wall, {c['cpu']:6.2f} s CPU")
  print("cores busy per second:",
        " ".join(f"{b:.1f}" for _, b in result["busy_cores"]))
  print(f"machine: {describe(result['machine'])}")
  print(f"total: {result['wall_seconds']:.1f} s wall, "
        f"{result['cpu_seconds']:.1f} s CPU; output md5 {result['output_md5']}")
  os.makedirs(os.path.dirname(opts["json"]) or ".", exist_ok=True)
  with open(opts["json"], "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {opts['json']}")


if __name__ == "__main__":
  main()
