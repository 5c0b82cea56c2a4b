"""Where a DIP iteration's time goes: our JAX port against the authors' PyTorch.

    python -m benchmarks.dip_breakdown                           # JAX side only
    python -m benchmarks.dip_breakdown --reference_dir=PATH      # and PyTorch's
    python -m benchmarks.dip_breakdown --channels=32

The same step as :mod:`benchmarks.dip_reference` (the denoising notebook's
net and loop on the BENCHMARKS.md denoise input), profiled op by op: on the
JAX side ``--steps`` iterations of the compiled ``lax.scan`` under
``jax.profiler`` (each XLA kernel is attributed by its HLO ``op_name`` to
the layer it computes), on the PyTorch side as many iterations under
``torch.profiler`` (self time of each ``aten`` op). Both are grouped into
the same kinds of layer and printed as ms per iteration beside the wall
time of the step (best of ``--repeats`` timed runs). Writes JSON.

The JAX convolutions on CPU are matmuls per kernel row of taps
(:func:`dncf_jax.nets.conv_taps`) or im2col (stride 2), so their
time splits into the matmuls and the data movement around them
(reflection padding, shifting and summing the taps, patches for im2col);
PyTorch's convolution kernels do both inside one call. XLA:CPU runs
independent kernels side by side, so JAX's kernel times can add up to
more than its wall time.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time

from absl import flags
import numpy as np

from benchmarks import dip_reference as ref
from benchmarks.common import describe, machine, write_json
from experiments import cli

FLAGS = flags.FLAGS

KINDS = ("convolution", "batch norm", "upsampling", "activation",
         "other net ops", "loss, noise, Adam, moving average")


def define_flags() -> None:
  ref.define_input_flags("Checkout of the DIP authors' repository; without "
                         "it only the JAX side runs.")
  flags.DEFINE_integer("steps", 10, "Iterations per timed and profiled run.")
  flags.DEFINE_integer("repeats", 3, "Timed runs (the best is reported).")
  flags.DEFINE_string("output", "benchmarks/results/dip_breakdown.json",
                      "JSON written here.")


def jax_kind(op_name: str) -> tuple[str, bool]:
  """The kind of layer an XLA kernel belongs to, from its HLO ``op_name``
  (the Flax module path), and whether it is a convolution's matmul."""
  if "/conv_" in op_name:
    return "convolution", "dot_general" in op_name
  for key, kind in (("/bn", "batch norm"), ("upsample2x", "upsampling"),
                    ("leaky_relu", "activation"), ("Skip", "other net ops")):
    if key in op_name:
      return kind, False
  return "loss, noise, Adam, moving average", False


def torch_kind(name: str) -> str:
  for key, kind in (("conv", "convolution"), ("reflection_pad", "convolution"),
                    ("batch_norm", "batch norm"), ("upsample", "upsampling"),
                    ("leaky_relu", "activation"), ("aten::cat", "other net ops")):
    if key in name:
      return kind
  return "loss, noise, Adam, moving average"


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> its ``op_name`` metadata."""
  pat = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*?op_name=\"([^\"]*)\"", re.M)
  return {m.group(1): m.group(2) for m in pat.finditer(hlo_text)}


def trace_events(directory: str) -> list[dict]:
  files = sorted(glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True))
  if not files:
    raise RuntimeError(f"jax.profiler wrote no trace under {directory}")
  with gzip.open(files[-1]) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return [e for e in events if e.get("ph") == "X"]


def best_of(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def run_jax(noisy: np.ndarray, cfg, steps: int, repeats: int) -> dict:
  import jax
  from dncf_jax import engine, physics
  from dncf_jax.baselines import dip
  method = dip.DIP(cfg, tuple(noisy.shape))
  state, inp = jax.jit(method.init)(noisy, physics.Denoise(),
                                    jax.random.key(cfg.seed))
  # The steps alone (no checkpoint), as torch_step times them.
  run = lambda st, inp: jax.lax.scan(lambda s, _: method.step(s, inp), st,
                                     None, length=steps)
  compiled, compile_s = engine.compile_timed(run, state, inp)
  call = lambda: jax.block_until_ready(compiled(state, inp))
  call()
  wall = best_of(call, repeats) / steps
  names = op_names(compiled.as_text())
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d, create_perfetto_trace=True)
    call()
    jax.profiler.stop_trace()
    events = trace_events(d)
  kinds: dict[str, float] = collections.Counter()
  matmul = 0.0
  for e in events:
    if e["name"] in names:
      kind, is_dot = jax_kind(names[e["name"]])
      kinds[kind] += e.get("dur", 0) / 1e3 / steps
      matmul += is_dot * e.get("dur", 0) / 1e3 / steps
  return dict(ms_per_iteration=wall * 1e3, compile_seconds=compile_s,
              kinds_ms={k: kinds.get(k, 0.0) for k in KINDS},
              convolution_matmul_ms=matmul, jax=jax.__version__)


def run_torch(get_net, noisy: np.ndarray, cfg, steps: int, repeats: int) -> dict:
  import torch
  from torch.profiler import profile
  t = ref.torch_step(get_net, noisy, cfg)

  def call():
    for _ in range(steps):
      t.step()
    t.sync()

  call()
  wall = best_of(call, repeats) / steps
  with profile() as prof:
    call()
  kinds: dict[str, float] = collections.Counter()
  for a in prof.key_averages():
    kinds[torch_kind(a.key)] += a.self_cpu_time_total / 1e3 / steps
  return dict(ms_per_iteration=wall * 1e3,
              kinds_ms={k: kinds.get(k, 0.0) for k in KINDS},
              torch=torch.__version__, threads=torch.get_num_threads())


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  ref.check_positive("channels", "steps", "repeats")
  get_net = (ref.load_reference(FLAGS.reference_dir)
             if FLAGS.reference_dir else None)
  prof, noisy, _, cfg = ref.denoise_case(0)
  m = machine()
  print(f"DIP step, denoise {noisy.shape}, {cfg.net.channels} channels; "
        f"{describe(m)}", flush=True)
  sides = dict(jax=run_jax(noisy, cfg, FLAGS.steps, FLAGS.repeats))
  if get_net is not None:
    sides["torch"] = run_torch(get_net, noisy, cfg, FLAGS.steps, FLAGS.repeats)
  cols = list(sides)
  print(f"{'ms per iteration':<36}" + "".join(f"{c:>10}" for c in cols))
  for k in KINDS:
    print(f"{k:<36}" + "".join(f"{sides[c]['kinds_ms'][k]:10.1f}" for c in cols))
  conv = sides["jax"]
  print(f"{'  of which JAX matmuls':<36}{conv['convolution_matmul_ms']:10.1f}")
  print(f"{'sum of op times':<36}"
        + "".join(f"{sum(sides[c]['kinds_ms'].values()):10.1f}" for c in cols))
  print(f"{'wall (best of ' + str(FLAGS.repeats) + ')':<36}"
        + "".join(f"{sides[c]['ms_per_iteration']:10.1f}" for c in cols))
  result = dict(benchmark="dip_breakdown", profile=prof.name,
                image=list(noisy.shape), channels=cfg.net.channels,
                steps=FLAGS.steps, argv=sys.argv[1:], machine=m, sides=sides)
  if "torch" in sides:
    result["torch_over_jax"] = (sides["torch"]["ms_per_iteration"]
                                / sides["jax"]["ms_per_iteration"])
    print(f"PyTorch / JAX ms per iteration: {result['torch_over_jax']:.2f}x")
  write_json(FLAGS.output, result)


if __name__ == "__main__":
  define_flags()
  cli.run_main(main)
