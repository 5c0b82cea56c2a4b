"""Clean against robust accuracy of every purifier, its strength swept:
``python -m experiments.defense_frontier``.

The data, classifier and threat model of Table 1 (``experiments.defense``,
whose flags ``--input``, ``--weights``, ``--limit``, ``--batch_size``,
``--eot_samples``, ``--output_dir``, ``--resume``, ``--overwrite`` and the
DNCF settings it reads; its own lists ``--attacks``, ``--defenses``,
``--adaptive`` are not used). Each defense runs at each setting of its
grid; each (defense, setting) gets a row per threat:

* ``clean``: the defended clean images;
* ``pgd``, ``cw``: the attack on the bare classifier, then the defense
  (non-adaptive; the adversarial images are made once and kept in
  ``frontier_adv.npz``);
* ``pgd_bpda_eot``: PGD through the defense, BPDA with the approximation
  of :data:`dncf_jax.adaptive.APPROXIMATIONS` (JPEG: smooth JPEG, TV:
  unrolled Chambolle, blur: itself, others: identity) and EOT over
  ``--eot_samples`` draws for DNCF (one for the deterministic ones);
* ``cw_bpda``: CW on ``logits(bpda(defense))`` (DNCF: one fixed draw).

Each row (all images) is a line of ``frontier.jsonl``; ``--resume`` skips
the rows there. The table (``frontier.md`` / ``.json``) and the figure
(``frontier.png``: clean accuracy on x, robust on y, a curve per defense,
a panel per threat) are built from that file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Optional

from absl import flags
import numpy as np

from experiments import cli
from experiments import defense as table1

FLAGS = flags.FLAGS
THREATS = ("pgd", "cw", "pgd_bpda_eot", "cw_bpda")
NON_ADAPTIVE = ("pgd", "cw")
DEFENSES = ("none", "jpeg", "median", "gaussian_blur", "tv", "bit_depth",
            "dncf_per_image", "dncf_shared")
ALIASES = {"blur": "gaussian_blur", "median3x3": "median"}
STEM = "frontier"

flags.DEFINE_list("sweep", [d for d in DEFENSES if d != "dncf_shared"],
                  f"Defenses to sweep, of {', '.join(DEFENSES)} ('none': "
                  "the bare classifier).")
flags.DEFINE_list("threats", list(THREATS), "Threats (the clean row always "
                  f"runs), of {', '.join(THREATS)}.")
flags.DEFINE_list("jpeg_quality", ["95", "75", "50", "30", "10"],
                  "JPEG qualities.")
flags.DEFINE_list("median_size", ["3", "5"], "Median filter sizes (pixels).")
flags.DEFINE_list("blur_sigma", ["0.5", "0.75", "1", "1.5"],
                  "Gaussian blur widths (pixels).")
flags.DEFINE_list("tv_weight", ["0.03", "0.06", "0.1", "0.2"],
                  "TV weights (scikit-image's).")
flags.DEFINE_list("bits", ["6", "5", "4", "3", "2"], "Bit depths.")
flags.DEFINE_list("dncf_grid", ["iterations=10", "iterations=30",
                                "iterations=60", "iterations=90",
                                "iterations=120", "beta=0.3", "beta=3"],
                  "DNCF settings, each 'field=value[+field=value]' over the "
                  "DNCF flags (fields of DefenseConfig).")
flags.DEFINE_integer("cw_steps", 100, "Adam steps of CW (both rows).")
flags.DEFINE_boolean("report_only", False, "Write the table and figure "
                     "from the rows in --output_dir, running none (cells "
                     "not run show '-').")
flags.DEFINE_integer("stop_after_rows", None, "Debug: stop after this many "
                     "new rows (to test --resume).")
FLAGS.set_default("limit", 200)


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


def _parse(value: str):
  for cast in (int, float):
    try:
      return cast(value)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(value.lower(), value)


def grid(name: str) -> list[dict]:
  """The settings of defense ``name`` from the flags, in sweep order."""
  one = lambda key, vals, cast: [{key: cast(v)} for v in vals if v]
  if name == "none":
    return [{}]
  if name == "jpeg":
    return one("quality", FLAGS.jpeg_quality, int)
  if name == "median":
    return one("size", FLAGS.median_size, int)
  if name == "gaussian_blur":
    return one("sigma", FLAGS.blur_sigma, float)
  if name == "tv":
    return one("weight", FLAGS.tv_weight, float)
  if name == "bit_depth":
    return one("bits", FLAGS.bits, int)
  out = []
  for spec in FLAGS.dncf_grid:
    pairs = [p.split("=", 1) for p in spec.split("+") if p]
    if any(len(p) != 2 for p in pairs):
      raise ValueError(f"--dncf_grid entry {spec!r}: expected field=value[+...]")
    out.append({k: _parse(v) for k, v in pairs})
  return out


def label(setting: dict) -> str:
  return "+".join(f"{k}={v}" for k, v in setting.items()) or "-"


def dncf_config(mode: str, setting: dict):
  """The purifier's config: the DNCF flags, overridden by ``setting``."""
  from dncf_jax.defense import DefenseConfig
  base = cli.config_values(table1.DNCF_FLAGS) | dict(mode=mode)
  cfg = DefenseConfig.from_flat(**(base | setting))
  cfg.validate()
  return cfg


def parse_lists() -> tuple[list[str], list[str]]:
  sweep = [ALIASES.get(d, d) for d in FLAGS.sweep if d]
  bad = [d for d in sweep if d not in DEFENSES]
  if bad:
    raise ValueError(f"unknown defense(s) {bad}; choose from {', '.join(DEFENSES)}")
  threats = [t for t in FLAGS.threats if t]
  bad = [t for t in threats if t not in THREATS]
  if bad:
    raise ValueError(f"unknown threat(s) {bad}; choose from {', '.join(THREATS)}")
  if FLAGS.batch_size < 1 or FLAGS.eot_samples < 1 or FLAGS.cw_steps < 1:
    raise ValueError("--batch_size, --eot_samples and --cw_steps must be >= 1")
  return sweep, threats


# ---------------------------------------------------------------------------
# Defenses: the real one (NumPy), traced forward and approximation (jit)
# ---------------------------------------------------------------------------


def make_defense(name: str, setting: dict, seed: int):
  """``(apply(x, idx) -> np, forward(x, key), approx(x, key) or None,
  random)`` of defense ``name`` at ``setting``."""
  import jax
  from dncf_jax import adaptive, defense, defense_baselines as db
  if name == "none":
    ident = lambda x, k: x
    return (lambda x, idx: x), ident, None, False
  if name.startswith("dncf_"):
    cfg = dncf_config(name[5:], setting)
    apply = lambda x, idx: defense.purify(x, cfg, jax.random.key(seed),
                                          indices=idx)
    return apply, defense.forward(cfg), None, True
  fwd, approx = adaptive.baseline(name, **setting)
  apply = lambda x, idx: np.asarray(db.defend(name, x, **setting))
  return apply, fwd, approx, False


# ---------------------------------------------------------------------------
# Records and the table
# ---------------------------------------------------------------------------


def build_table(records: list[dict], order: list[tuple[str, str]]) -> dict:
  """``rows``: one per (defense, setting) of ``order`` that has records,
  accuracy per threat (the last record of a threat wins)."""
  rows: dict = {}
  for r in sorted(records, key=lambda r: order.index(
      (r["defense"], r["setting"]))):
    row = rows.setdefault((r["defense"], r["setting"]), dict(
        defense=r["defense"], setting=r["setting"], params=r["params"],
        images=len(r["correct"]), accuracy={}, seconds={}))
    row["accuracy"][r["threat"]] = 100.0 * float(np.mean(r["correct"]))
    row["seconds"][r["threat"]] = r["seconds"]
  return dict(rows=list(rows.values()))


def to_markdown(table: dict, threats: list[str], meta: dict) -> str:
  head = ["defense", "setting", "images", "clean"] + threats
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  fmt = lambda v: "-" if v is None else f"{v:.1f}"
  for r in table["rows"]:
    cells = [r["defense"], r["setting"], str(r["images"])]
    cells += [fmt(r["accuracy"].get(t)) for t in ["clean"] + threats]
    lines.append("| " + " | ".join(cells) + " |")
  parts = ["Accuracy in % of the same images (every image counted)."]
  if set(threats) & set(NON_ADAPTIVE):
    parts.append("`pgd`, `cw`: the attack on the bare classifier, then the "
                 "defense.")
  if "pgd_bpda_eot" in threats:
    parts.append("`pgd_bpda_eot`: PGD through the defense with BPDA "
                 "(backward: smooth JPEG, unrolled TV, the blur itself, "
                 "identity otherwise) and EOT over "
                 f"{meta['eot_samples']} draws for DNCF.")
  if "cw_bpda" in threats:
    parts.append(f"`cw_bpda`: CW ({meta['cw_steps']} steps) through the "
                 "same BPDA, one draw.")
  parts.append("DNCF settings override " + json.dumps(
      {k: meta["dncf"].get(table1.SHOWN_ALIASES.get(k, k))
       for k in table1.SHOWN}) + ".")
  note = " ".join(parts)
  return "\n".join(lines + ["", note]) + "\n"


def plot(table: dict, threats: list[str], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(threats), figsize=(4.2 * len(threats), 4),
                           squeeze=False)
  curves: dict = {}   # one per defense and swept field(s)
  for r in table["rows"]:
    fields = "+".join(r["params"])
    name = f"{r['defense']} ({fields})" if r["defense"].startswith(
        "dncf_") else r["defense"]
    curves.setdefault((r["defense"], name), []).append(r)
  colors = {d: f"C{i}" for i, d in enumerate(DEFENSES)}
  for ax, t in zip(axes[0], threats):
    for k, ((d, name), rows) in enumerate(curves.items()):
      pts = [(r["accuracy"].get("clean"), r["accuracy"].get(t), r["setting"])
             for r in rows if r["accuracy"].get(t) is not None]
      if not pts:
        continue
      xs, ys, _ = zip(*pts)
      style = "*" if d == "none" else (
          "o-" if name.endswith("(iterations)") or "(" not in name else "s--")
      ax.plot(xs, ys, style, color=colors[d], label=name,
              ms=9 if d == "none" else 4)
      for x, y, n in pts:
        tag = "" if n == "-" else n if "+" in n else n.split("=")[-1]
        ax.annotate(tag, (x, y), fontsize=6,
                    xytext=(2, 2), textcoords="offset points")
    ax.set_title(t)
    ax.set_xlabel("clean accuracy (%)")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("robust accuracy (%)")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def batches(n: int, size: int) -> list[slice]:
  return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def padded(run: Callable, x: np.ndarray, size: int) -> np.ndarray:
  """``run`` on ``x`` padded to ``size`` images (one compiled shape)."""
  n = len(x)
  if n < size:
    x = np.concatenate([x, np.repeat(x[-1:], size - n, 0)])
  return np.asarray(run(x))[:n]


def main(argv):
  from absl import app
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sweep, threats = parse_lists()
  settings = {d: grid(d) for d in sweep}
  for d in sweep:
    if d.startswith("dncf_"):
      for s in settings[d]:
        dncf_config(d[5:], s)
  if FLAGS.resume and FLAGS.overwrite:
    raise ValueError("--resume continues the run in --output_dir, "
                     "--overwrite replaces it: pass one of them")
  out = FLAGS.output_dir
  jsonl, table_json = (os.path.join(out, f"{STEM}{e}")
                       for e in (".jsonl", ".json"))
  if FLAGS.report_only and not os.path.isfile(jsonl):
    raise ValueError(f"--report_only: no {jsonl} to report")
  if not FLAGS.resume and not FLAGS.report_only:
    cli.refuse_overwrite([table_json, jsonl], FLAGS.overwrite,
                         "--resume (to continue that run) or another "
                         "--output_dir")
  data = table1.resolve(FLAGS.input, FLAGS.data_dir, "--input")
  weights = table1.resolve(FLAGS.weights, FLAGS.models_dir, "--weights")
  from dncf_jax import io as dio
  images, labels = dio.load_labelled_images(data, "--input")
  sel = table1.select(len(images), FLAGS.limit)
  import jax
  cli.use_compilation_cache(FLAGS.compilation_cache)
  from dncf_jax import adaptive, attacks, classifiers

  os.makedirs(out, exist_ok=True)
  # What a resumed run must share with the rows already there.
  meta = dict(data=os.path.abspath(data), images=sel.tolist(),
              eot_samples=FLAGS.eot_samples, cw_steps=FLAGS.cw_steps,
              seed=FLAGS.seed, batch_size=FLAGS.batch_size,
              dncf=cli.config_values(table1.DNCF_FLAGS))
  meta_path = os.path.join(out, f"{STEM}_run.json")
  if FLAGS.report_only and not os.path.isfile(meta_path):
    raise ValueError(f"--report_only: no {meta_path} to report")
  records = table1.open_records(jsonl, meta_path, meta,
                                keep=FLAGS.resume or FLAGS.report_only,
                                rewrite=FLAGS.resume)
  done = {(r["defense"], r["setting"], r["threat"]) for r in records}

  apply_fn, params = classifiers.load_resnet20(weights)
  logits_fn = jax.jit(lambda x: apply_fn(params, x))
  predict = lambda x: np.argmax(np.asarray(logits_fn(x)), -1)
  x_all, y_all = images[sel], labels[sel]
  parts = batches(len(sel), FLAGS.batch_size)
  key = jax.random.key(FLAGS.seed)
  bkey = lambda s: jax.random.fold_in(key, int(sel[s.start]))

  adv_path = os.path.join(out, f"{STEM}_adv.npz")
  adv_cache: dict[str, np.ndarray] = {}
  if FLAGS.resume and os.path.isfile(adv_path):
    with np.load(adv_path) as f:
      if np.array_equal(f["indices"], sel):
        adv_cache = {k: f[k] for k in f.files if k in NON_ADAPTIVE}

  def non_adaptive(name: str) -> np.ndarray:
    if name not in adv_cache:
      kw = dict(steps=FLAGS.cw_steps) if name == "cw" else {}
      adv_cache[name] = np.concatenate([padded(
          lambda x: attacks.attack(name, logits_fn, x, _pad(y_all[s], len(x)),
                                   key=bkey(s), **kw), x_all[s],
          FLAGS.batch_size) for s in parts])
      np.savez(adv_path, indices=sel, **adv_cache)
    return adv_cache[name]

  def _pad(y, n):
    return np.concatenate([y, np.repeat(y[-1:], n - len(y))])

  def adaptive_attack(threat, fwd, approx, random):
    if threat == "pgd_bpda_eot":
      samples = FLAGS.eot_samples if random else 1
      run = jax.jit(lambda x, y, k: adaptive.eot_pgd(
          logits_fn, fwd, x, y, k, samples=samples, approx=approx))
      return lambda x, y, s: run(x, y, bkey(s))
    through = adaptive.bpda(fwd, approx)
    k0 = jax.random.fold_in(key, 1)
    defended = lambda z: logits_fn(through(z, k0))
    return lambda x, y, s: attacks.cw(defended, x, y, steps=FLAGS.cw_steps)

  rows = [(d, s, t) for d in sweep for s in settings[d]
          for t in ["clean"] + [t for t in threats
                                if d != "none" or t in NON_ADAPTIVE]]
  todo = [r for r in rows if (r[0], label(r[1]), r[2]) not in done
          and not FLAGS.report_only]
  record = cli.run_record()
  print(f"frontier: {len(sel)} images, {len(rows)} rows ({len(todo)} to "
        f"run), device {record['device']['kind']} "
        f"({record['device']['backend']})", flush=True)
  t0, new_rows = time.perf_counter(), 0
  with open(jsonl, "a") as out_f:
    for i, (d, s, t) in enumerate(todo):
      t1 = time.perf_counter()
      apply, fwd, approx, random = make_defense(d, s, FLAGS.seed)
      if t == "clean":
        adv = x_all
      elif t in NON_ADAPTIVE:
        adv = non_adaptive(t)
      else:
        atk = adaptive_attack(t, fwd, approx, random)
        adv = np.concatenate([padded(
            lambda x, s=sl: atk(x, _pad(y_all[s], len(x)), s), x_all[sl],
            FLAGS.batch_size) for sl in parts])
      pur = np.concatenate([padded(
          lambda x, sl=sl: apply(x, _pad(sel[sl], len(x))), adv[sl],
          FLAGS.batch_size) for sl in parts])
      correct = (predict(pur) == y_all).tolist()
      rec = dict(defense=d, setting=label(s), params=s, threat=t,
                 correct=correct, indices=sel.tolist(),
                 seconds=time.perf_counter() - t1)
      out_f.write(json.dumps(rec) + "\n")
      out_f.flush()
      records.append(rec)
      new_rows += 1
      elapsed = time.perf_counter() - t0
      print(f"[{i + 1}/{len(todo)}] {d} {label(s)} {t}: "
            f"{100 * np.mean(correct):.1f} %, {rec['seconds']:.1f} s, "
            f"ETA {cli.duration(elapsed / (i + 1) * (len(todo) - i - 1))}",
            flush=True)
      if FLAGS.stop_after_rows and new_rows >= FLAGS.stop_after_rows:
        print(f"stopped after {new_rows} row(s); continue with --resume",
              flush=True)
        return

  keep = {(d, label(s), t) for d, s, t in rows}
  order = list(dict.fromkeys((d, label(s)) for d, s, _ in rows))
  table = dict(record, **build_table(
      [r for r in records if (r["defense"], r["setting"], r["threat"]) in keep],
      order))
  table["meta"] = meta | dict(images=len(sel), sweep=sweep, threats=threats,
                              argv=sys.argv[1:])
  tmp = table_json + ".tmp"
  with open(tmp, "w") as f:
    json.dump(table, f, indent=1)
  os.replace(tmp, table_json)
  md = to_markdown(table, threats, meta)
  with open(os.path.join(out, f"{STEM}.md"), "w") as f:
    f.write(md)
  plot(table, threats, os.path.join(out, f"{STEM}.png"))
  print(md, flush=True)
  print(f"frontier: {len(table['rows'])} settings, "
        f"{time.perf_counter() - t0:.0f} s this run -> {table_json}",
        flush=True)


if __name__ == "__main__":
  cli.run_main(main)
