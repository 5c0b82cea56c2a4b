"""The convexification study of section 6 (Figure 7): ``python -m experiments.convexify``.

Trains FICNN, PICNN and CVXR-Net on seeded 2-D sets and writes to
``--output_dir``: ``regions.png`` (rows = nets, columns = sets, as Figure 7),
``gamma_sweep.png`` (CVXR-Net's regions for each gamma), ``results.md``
and ``results.json`` (accuracy, convexity report, gamma sweep). Earlier
results there are kept unless ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app, flags
import numpy as np

from dncf_jax import convex_nets as cn
from dncf_jax import toy_data
from experiments import cli

flags.DEFINE_integer("iterations", 2000, "Adam steps per net (full batch).")
flags.DEFINE_integer("seed", 0, "Seed of the data sets, the inits and the "
                     "Jensen segments.")
flags.DEFINE_string("datasets", ",".join(toy_data.NAMES),
                    "Comma-separated sets: " + ", ".join(toy_data.NAMES) + ".")
flags.DEFINE_string("gammas", "0,0.01,0.1,1,hard", "CVXR-Net's gamma sweep: "
                    "comma-separated values >= 0, 'hard' for the projection.")
flags.DEFINE_float("gamma", 0.1, "CVXR-Net's penalty weight in the Figure 7 "
                   "grid.")
flags.DEFINE_enum("coverage", "all", list(cn.COVERAGES), "CVXR-Net's penalised "
                  "z-path kernels: all, or the upper (top) layer only.")
flags.DEFINE_boolean("adaptive_gamma", False, "CVXR-Net: gamma <- gamma/4 "
                     "whenever the penalty exceeds the data loss.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("hidden", 200, "Units per hidden layer.")
flags.DEFINE_integer("points", 600, "Points per set (half train, half test).")
flags.DEFINE_integer("segments", 1000, "Random segments of the Jensen check.")
flags.DEFINE_boolean("small", False, "Quick run: 200 iterations, 32 units, "
                     "200 points, 200 segments.")
flags.DEFINE_string("output_dir", os.path.join("outputs", "convexify"),
                    "Where results are written.")
flags.DEFINE_boolean("overwrite", False, "Replace the results in "
                     "--output_dir (without it the command stops before any "
                     "work).")
FLAGS = flags.FLAGS

NET_TITLES = dict(ficnn="FICNN", picnn="PICNN", cvxr="CVXR-Net")


def parse_gammas(text: str) -> list:
  """``"0,0.01,hard"`` -> ``[0.0, 0.01, "hard"]``."""
  out = []
  for s in (t.strip() for t in text.split(",") if t.strip()):
    if s == "hard":
      out.append("hard")
      continue
    try:
      g = float(s)
    except ValueError:
      raise ValueError(f"--gammas: {s!r} is neither a number nor 'hard'")
    if not (g >= 0 and np.isfinite(g)):
      raise ValueError(f"--gammas: gamma must be finite and >= 0, got {s}")
    out.append(g)
  if not out:
    raise ValueError("--gammas is empty")
  return out


def _settings() -> tuple[cn.ConvexConfig, int, int]:
  steps, hidden, points, segments = (FLAGS.iterations, FLAGS.hidden,
                                     FLAGS.points, FLAGS.segments)
  if FLAGS.small:
    steps, hidden, points, segments = 200, 32, 200, 200
  base = cn.ConvexConfig(hidden=hidden, layers=2, steps=steps,
                         lr=FLAGS.learning_rate, gamma=FLAGS.gamma,
                         coverage=FLAGS.coverage,
                         adaptive=FLAGS.adaptive_gamma,
                         seed=FLAGS.seed).validate()
  if points < 8 or segments < 1:
    raise ValueError(f"--points must be >= 8 and --segments >= 1, got "
                     f"{points} and {segments}")
  return base, points, segments


def _sweep_config(base: cn.ConvexConfig, g) -> cn.ConvexConfig:
  if g == "hard":
    return dataclasses.replace(base, net="cvxr", mode="hard")
  return dataclasses.replace(base, net="cvxr", mode="soft", gamma=g)


def _label(g) -> str:
  return "hard (projection)" if g == "hard" else f"gamma = {g:g}"


def _grid(data: toy_data.Split, n: int = 150):
  low, high = data.box()
  g0, g1 = np.meshgrid(np.linspace(low[0], high[0], n),
                       np.linspace(low[1], high[1], n))
  return g0, g1, np.stack([g0.ravel(), g1.ravel()], 1).astype(np.float32)


def _panel(ax, data, f, title=None, ylabel=None):
  g0, g1, pts = _grid(data)
  e = cn.scores(f.config, f.params, pts)
  pred = np.argmin(e, -1).reshape(g0.shape)
  margin = (e[:, 1] - e[:, 0]).reshape(g0.shape)
  ax.contourf(g0, g1, pred, levels=[-0.5, 0.5, 1.5],
              colors=["#f4b6b6", "#b6c8f4"])
  ax.contour(g0, g1, margin, levels=[0.0], colors="k", linewidths=0.8)
  x, y = data.x_train, data.y_train
  ax.scatter(x[y == 0, 0], x[y == 0, 1], s=5, c="#c0392b", lw=0)
  ax.scatter(x[y == 1, 0], x[y == 1, 1], s=5, c="#1f4e9c", lw=0)
  acc = cn.accuracy(f.config, f.params, data.x_test, data.y_test)
  ax.text(0.02, 0.02, f"test {acc:.2f}", transform=ax.transAxes, fontsize=7,
          bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1))
  ax.set_xticks([]), ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=9)
  if ylabel:
    ax.set_ylabel(ylabel, fontsize=9)


def _figure(path, rows, sets, fits, row_keys, row_titles):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(row_keys), len(sets), squeeze=False,
                           figsize=(2.1 * len(sets), 2.1 * len(row_keys)))
  for r, key in enumerate(row_keys):
    for c, name in enumerate(sets):
      _panel(axes[r, c], rows[name], fits[(key, name)],
             title=name if r == 0 else None,
             ylabel=row_titles[r] if c == 0 else None)
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def _entry(f: cn.Fit, data: toy_data.Split, segments: int, seed: int) -> dict:
  low, high = data.box()
  rep = cn.convexity_report(f.config, f.params, low, high, f.num_classes,
                            segments=segments, seed=seed)
  return dict(
      train_accuracy=cn.accuracy(f.config, f.params, data.x_train, data.y_train),
      test_accuracy=cn.accuracy(f.config, f.params, data.x_test, data.y_test),
      final_data_loss=float(f.history["data"][-1]),
      final_penalty=float(f.history["reg"][-1]),
      final_gamma=float(f.history["gamma"][-1]),
      seconds=f.seconds, config=dataclasses.asdict(f.config), convexity=rep)


def _markdown(sets, main, sweep, gammas) -> str:
  head = "| net | " + " | ".join(sets) + " |\n|---|" + "---|" * len(sets) + "\n"
  lines = ["Accuracy, train / test:", "", head.rstrip("\n")]
  for net, title in NET_TITLES.items():
    cells = [f"{main[net][s]['train_accuracy']:.3f} / {main[net][s]['test_accuracy']:.3f}"
             for s in sets]
    lines.append(f"| {title} | " + " | ".join(cells) + " |")
  lines += ["", "Convexity: negative mass sum(max(-w, 0)) / sum(|w|) of the "
            "z-path kernels wz_1 (200x200) and wz_2 (200x1), and the rate of "
            "Jensen violations (FICNN, CVXR-Net: in (x, y); PICNN: in y):", "",
            "| net | measure | " + " | ".join(sets) + " |",
            "|---|---|" + "---|" * len(sets)]
  for net, title in NET_TITLES.items():
    for key, what in (("negative_mass_wz_1", "neg. mass wz_1"),
                      ("negative_mass_wz_2", "neg. mass wz_2"),
                      ("jensen_rate", "Jensen violations")):
      cells = [f"{main[net][s]['convexity'][key]:.3f}" for s in sets]
      lines.append(f"| {title} | {what} | " + " | ".join(cells) + " |")
  lines += ["", "CVXR-Net gamma sweep, test accuracy / Jensen violation rate "
            "in (x, y):", "",
            "| setting | " + " | ".join(sets) + " | mean |",
            "|---|" + "---|" * (len(sets) + 1)]
  for g in gammas:
    row = sweep[_label(g)]
    acc = [row[s]["test_accuracy"] for s in sets]
    vio = [row[s]["convexity"]["jensen_rate"] for s in sets]
    cells = [f"{a:.3f} / {v:.3f}" for a, v in zip(acc, vio)]
    cells.append(f"{np.mean(acc):.3f} / {np.mean(vio):.3f}")
    lines.append(f"| {_label(g)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sets = toy_data.parse_names(FLAGS.datasets)
  gammas = parse_gammas(FLAGS.gammas)
  base, points, segments = _settings()
  names = ("regions.png", "gamma_sweep.png", "results.md", "results.json")
  cli.refuse_overwrite([os.path.join(FLAGS.output_dir, n) for n in names],
                       FLAGS.overwrite, "another --output_dir")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  import jax  # after flags, so JAX_PLATFORMS etc. from the environment apply
  record = cli.run_record()
  print(f"convexify: sets {sets}, {base.steps} iterations, {base.hidden} "
        f"units, device {record['device']['kind']}; each net compiles "
        f"first ...", flush=True)
  t0 = time.perf_counter()
  data = {s: toy_data.make(s, n=points, seed=FLAGS.seed) for s in sets}
  done: dict = {}  # canonical config -> Fit, so equal runs are trained once

  def run(cfg, name):
    key = (cn.canonical(cfg), name)
    if key not in done:
      done[key] = cn.fit(cfg, data[name].x_train, data[name].y_train)
    f = done[key]
    return cn.Fit(cfg, f.params, f.history, f.num_classes, f.seconds)

  fits, main_rows, sweep_rows = {}, {n: {} for n in NET_TITLES}, {}
  for name in sets:
    for net in NET_TITLES:
      cfg = dataclasses.replace(base, net=net)
      f = fits[(net, name)] = run(cfg, name)
      main_rows[net][name] = e = _entry(f, data[name], segments, FLAGS.seed)
      print(f"  {name:8s} {NET_TITLES[net]:8s} train {e['train_accuracy']:.3f} "
            f"test {e['test_accuracy']:.3f} Jensen {e['convexity']['jensen_rate']:.3f} "
            f"({f.seconds:.1f} s; {cli.duration(time.perf_counter() - t0)} "
            f"elapsed)", flush=True)
    for g in gammas:
      f = fits[(_label(g), name)] = run(_sweep_config(base, g), name)
      sweep_rows.setdefault(_label(g), {})[name] = e = _entry(
          f, data[name], segments, FLAGS.seed)
      print(f"  {name:8s} CVXR {_label(g):18s} test {e['test_accuracy']:.3f} "
            f"Jensen {e['convexity']['jensen_rate']:.3f} ({f.seconds:.1f} s; "
            f"{cli.duration(time.perf_counter() - t0)} elapsed)", flush=True)

  out = FLAGS.output_dir
  _figure(os.path.join(out, "regions.png"), data, sets, fits,
          list(NET_TITLES), list(NET_TITLES.values()))
  _figure(os.path.join(out, "gamma_sweep.png"), data, sets, fits,
          [_label(g) for g in gammas], [f"CVXR {_label(g)}" for g in gammas])
  table = _markdown(sets, main_rows, sweep_rows, gammas)
  seconds = time.perf_counter() - t0
  with open(os.path.join(out, "results.md"), "w") as fh:
    cmd = " ".join(["python -m experiments.convexify", *sys.argv[1:]])
    fh.write(f"Command: `{cmd}`"
             f" ({seconds:.0f} s, {jax.devices()[0].device_kind})\n\n" + table)
  with open(os.path.join(out, "results.json"), "w") as fh:
    json.dump(dict(record, datasets=sets, gammas=[str(g) for g in gammas],
                   nets=main_rows, gamma_sweep=sweep_rows, seconds=seconds,
                   points=points, segments=segments, argv=sys.argv[1:],
                   convention="energy, prediction = argmin over one-hot labels"),
              fh, indent=2, default=float)
  print(table, flush=True)
  mean = {t: np.mean([main_rows[n][s]["test_accuracy"] for s in sets])
          for n, t in NET_TITLES.items()}
  print("convexify: mean test accuracy " + ", ".join(
      f"{t} {a:.3f}" for t, a in mean.items())
      + f", {cli.duration(seconds)} -> {out}/results.json, results.md, "
      "regions.png, gamma_sweep.png", flush=True)


if __name__ == "__main__":
  cli.run_main(main)
