"""Our JAX DIP against the DIP authors' PyTorch code, same input, one process.

    python -m benchmarks.dip_reference --reference_dir=PATH            # cpu_small denoise
    python -m benchmarks.dip_reference --reference_dir=PATH --profile=paper   # F16 512x512
    python -m benchmarks.dip_reference --reference_dir=PATH --iterations=100  # s/it only

``PATH`` is a checkout of github.com/DmitryUlyanov/deep-image-prior (not
part of this repository; only its ``models/`` package is imported, which
needs torch and numpy). Needs ``torch`` (not in requirements.txt).

Both sides run the denoising notebook's setting on the BENCHMARKS.md
denoise input of the profile (the same noisy image for both): the
``skip`` net of ``models.get_net`` (128 channels unless ``--channels``,
5 scales, 4 skip channels, reflection padding, bilinear upsampling), a
32-channel code ``z ~ U[0, 0.1)``, ``z + N(0, (1/30)^2)`` each step, MSE to
the noisy image, Adam at 0.01, the moving average of outputs with decay
0.99. The PyTorch loop is the notebook's ``closure`` transcribed (the
notebook itself is not importable); the JAX side is
:func:`dncf_jax.baselines.dip_restore` with the ``denoise`` preset.

At every ``--checkpoint_every`` iterations both record the ORACLE PSNR of
the moving average and of ``f(z)`` (no input noise); the PyTorch side also
that of the notebook's ``out`` (the noisy-input output it prints). Reported
per side: best PSNR (and where), seconds per iteration of the loop (the
checkpoints included; JAX's compile apart), parameter count. Writes JSON.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, NamedTuple

from absl import flags
import numpy as np

from benchmarks.common import machine, peak_rss_mb, shared_data_dir, write_json
from dncf_jax import metrics
from experiments import cli
from experiments import table2_runs as tr

FLAGS = flags.FLAGS


def define_input_flags(reference_help: str) -> None:
  """The flags this benchmark shares with ``dip_breakdown``."""
  flags.DEFINE_string("reference_dir", None, reference_help)
  flags.DEFINE_enum("profile", "cpu_small", ["cpu_small", "paper"],
                    "Denoise input: the 128x128 F16 crop or the full 512x512.")
  flags.DEFINE_integer("channels", 128, "skip_n33d = skip_n33u (notebook: 128).")
  flags.DEFINE_string("data_dir", None, "Shared data (default ../shared/data).")


def define_flags() -> None:
  """The flags (defined when run, not on import: tests import two benchmarks)."""
  define_input_flags("Checkout of the DIP authors' repository "
                     "(github.com/DmitryUlyanov/deep-image-prior).")
  flags.DEFINE_integer("iterations", 3000, "Iterations per side (notebook: 3000).")
  flags.DEFINE_integer("checkpoint_every", 50, "PSNR sampling.")
  flags.DEFINE_integer("seed", 0, "Seed of both sides (their streams differ).")
  flags.DEFINE_list("sides", ["torch", "jax"], "Which implementations to run.")
  flags.DEFINE_string("output", "benchmarks/results/dip_reference.json",
                      "JSON written here.")


def check_positive(*names: str) -> None:
  """``ValueError`` naming the first of these integer flags below 1."""
  for name in names:
    if getattr(FLAGS, name) < 1:
      raise ValueError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")


def denoise_case(seed: int, **overrides):
  """``(profile, noisy, ground truth, DIP config)`` from the input flags:
  the BENCHMARKS denoise input and the ``denoise`` preset at
  ``--channels``, checked to be the notebook's setting that
  :func:`torch_step` transcribes."""
  prof = tr.profile(FLAGS.profile)
  inputs = tr.task_input("denoise", prof, shared_data_dir(FLAGS.data_dir))
  noisy = np.asarray(inputs["observation"], np.float32)
  gt = np.asarray(inputs["ground_truth"], np.float32)
  cfg = tr.net_config("dip", "denoise", prof, seed).replace(
      channels=FLAGS.channels, **overrides)
  if cfg.input_kind != "noise" or cfg.net.upsample != "bilinear":
    raise ValueError(f"the denoise preset changed ({cfg}); this benchmark "
                     "transcribes the notebook's noise/bilinear setting")
  return prof, noisy, gt, cfg


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  return metrics.psnr(np.clip(a, 0, 1), b)


def load_reference(path: str):
  """The authors' ``models.get_net`` from a checkout at ``path``."""
  if not path:
    raise ValueError("--reference_dir is required: a checkout of "
                     "github.com/DmitryUlyanov/deep-image-prior")
  if not os.path.isfile(os.path.join(path, "models", "skip.py")):
    raise FileNotFoundError(f"{path} is not a deep-image-prior checkout "
                            "(no models/skip.py)")
  try:
    import torch  # noqa: F401
  except ImportError as e:
    raise ImportError("the reference side needs torch (pip install torch); "
                      "--sides=jax runs ours alone") from e
  sys.path.insert(0, os.path.abspath(path))
  from models import get_net  # the authors' code
  return get_net


class TorchStep(NamedTuple):
  """The notebook's step: ``step()`` runs one iteration and returns the
  net's output on the noisy input; ``sync()`` waits for the device."""

  step: Callable[[], Any]
  net: Any
  z: Any
  sync: Callable[[], None]
  device: str


def torch_step(get_net, noisy: np.ndarray, cfg) -> TorchStep:
  """The denoising notebook's ``closure`` + Adam step, in PyTorch."""
  import torch
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(cfg.seed)
  torch.backends.cudnn.benchmark = True
  net = get_net(cfg.input_depth, "skip", "reflection",
                skip_n33d=cfg.net.channels, skip_n33u=cfg.net.channels,
                skip_n11=cfg.net.skip_channels, num_scales=cfg.net.scales,
                upsample_mode=cfg.net.upsample).to(dev)
  h, w = noisy.shape[:2]
  z = (torch.rand(1, cfg.input_depth, h, w) * cfg.input_scale).to(dev)
  target = torch.from_numpy(np.ascontiguousarray(
      noisy.transpose(2, 0, 1)[None])).to(dev)
  opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
  mse = torch.nn.MSELoss()
  noise = z.clone()

  def step():
    opt.zero_grad()
    out = net(z + noise.normal_() * cfg.reg_noise_std)
    mse(out, target).backward()
    opt.step()
    return out

  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  return TorchStep(step, net, z, sync, dev)


def run_torch(get_net, noisy: np.ndarray, gt: np.ndarray, cfg) -> dict:
  """The denoising notebook's loop (its ``closure`` + Adam), in PyTorch."""
  import torch
  step, net, z, sync, dev = torch_step(get_net, noisy, cfg)
  ema = None
  rows = []
  to_np = lambda t: t.detach().cpu().numpy()[0].transpose(1, 2, 0)
  sync()
  t0 = time.perf_counter()
  for i in range(cfg.iterations):
    out = step()
    ema = (out.detach() if ema is None else
           ema * cfg.ema_decay + out.detach() * (1 - cfg.ema_decay))
    if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == cfg.iterations:
      with torch.no_grad():
        clean = net(z)
      sync()
      rows.append((i + 1, time.perf_counter() - t0, _psnr(to_np(ema), gt),
                   _psnr(to_np(clean), gt), _psnr(to_np(out), gt)))
  seconds = time.perf_counter() - t0
  n_params = sum(p.numel() for p in net.parameters())
  return summarise(rows, ("ema", "last", "notebook_out"), seconds, 0.0,
                   n_params, dict(torch=torch.__version__, device=dev,
                                  threads=torch.get_num_threads()))


def run_jax(noisy: np.ndarray, gt: np.ndarray, cfg) -> dict:
  import jax
  from dncf_jax import baselines as bl, physics
  rows = []

  def rec(info):
    if "psnr" in info:
      p = info["psnr"]
      rows.append((int(info["iteration"]), time.perf_counter() - t0,
                   float(p["ema"]), float(p["last"])))

  t0 = time.perf_counter()
  r = bl.dip_restore(noisy, physics.Denoise(), cfg, jax.random.key(cfg.seed),
                     reference=gt, progress=rec)
  trainable = r.params.get("params", r.params)   # not BatchNorm's statistics
  n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(trainable))
  # rows' seconds count from the call: take the compile off the loop
  rows = [(it, s - r.compile_seconds, *p) for it, s, *p in rows]
  return summarise(rows, ("ema", "last"), r.seconds - r.compile_seconds,
                   r.compile_seconds, n_params,
                   dict(jax=jax.__version__, device=jax.devices()[0].device_kind))


def steady_seconds_per_iteration(curve: np.ndarray) -> float | None:
  """Seconds per iteration between the first and the last checkpoint:
  without the first chunk (JAX's setup and first call, cuDNN's autotuning)."""
  if len(curve) < 2:
    return None
  return float((curve[-1, 1] - curve[0, 1]) / (curve[-1, 0] - curve[0, 0]))


def summarise(rows, names, loop_seconds, compile_seconds, n_params, info) -> dict:
  """Best and final PSNR per column, s/it; ``best_psnr`` is over the
  columns both sides have (EMA and ``f(z)``), for a like-for-like
  comparison."""
  a = np.asarray(rows, np.float64)
  psnr = a[:, 2:]
  best = {n: dict(psnr=float(psnr[:, j].max()),
                  iteration=int(a[int(np.argmax(psnr[:, j])), 0]))
          for j, n in enumerate(names)}
  its = int(a[-1, 0])
  return dict(curve=dict(columns=["iteration", "loop_seconds", *names],
                         rows=a.tolist()),
              best=best,
              best_psnr=max(best[n]["psnr"] for n in ("ema", "last")),
              final={n: float(psnr[-1, j]) for j, n in enumerate(names)},
              iterations=its, loop_seconds=loop_seconds,
              seconds_per_iteration=loop_seconds / its,
              steady_seconds_per_iteration=steady_seconds_per_iteration(a),
              compile_seconds=compile_seconds, parameters=n_params,
              peak_rss_mb=peak_rss_mb(), **info)


def _ratio(a, b):
  return a / b if a and b else None


def _ms(x, scale=1e3, spec=".1f"):
  return "-" if x is None else format(x * scale, spec)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  sides = tr.check_choice("side", FLAGS.sides, ("torch", "jax"))
  check_positive("iterations", "channels", "checkpoint_every")
  get_net = load_reference(FLAGS.reference_dir) if "torch" in sides else None
  import jax
  prof, noisy, gt, cfg = denoise_case(
      FLAGS.seed, iterations=FLAGS.iterations,
      checkpoint_every=FLAGS.checkpoint_every)
  result = dict(benchmark="dip_reference", profile=prof.name,
                image=list(noisy.shape), argv=sys.argv[1:],
                machine=machine(),
                config=cfg.flat(), sides={})
  print(f"denoise {noisy.shape}, {cfg.net.channels} channels, {cfg.iterations} "
        f"iterations, device {jax.devices()[0].device_kind}", flush=True)
  for side in sides:
    r = (run_torch(get_net, noisy, gt, cfg) if side == "torch"
         else run_jax(noisy, gt, cfg))
    result["sides"][side] = r
    print(f"{side}: best {r['best_psnr']:.2f} dB "
          + ", ".join(f"{n} {b['psnr']:.2f}@{b['iteration']}"
                      for n, b in r["best"].items())
          + "; final " + ", ".join(f"{n} {v:.2f}" for n, v in r["final"].items())
          + f"; {r['seconds_per_iteration'] * 1e3:.1f} ms/it, steady "
          f"{_ms(r['steady_seconds_per_iteration'])} ms/it (compile {r['compile_seconds']:.1f} s), params {r['parameters']}",
          flush=True)
  s = result["sides"]
  if len(s) == 2:
    result["compare"] = dict(
        best_psnr_jax_minus_torch=s["jax"]["best_psnr"] - s["torch"]["best_psnr"],
        seconds_per_iteration_torch_over_jax=(
            s["torch"]["seconds_per_iteration"] / s["jax"]["seconds_per_iteration"]),
        steady_torch_over_jax=_ratio(s["torch"]["steady_seconds_per_iteration"],
                                     s["jax"]["steady_seconds_per_iteration"]))
    c = result["compare"]
    print(f"JAX - PyTorch best PSNR: {c['best_psnr_jax_minus_torch']:+.2f} dB; "
          f"PyTorch / JAX s/it: {c['seconds_per_iteration_torch_over_jax']:.2f}x "
          f"(steady: {_ms(c['steady_torch_over_jax'], 1, '.2f')}x)", flush=True)
  write_json(FLAGS.output, result)


if __name__ == "__main__":
  define_flags()
  cli.run_main(main)
