"""Table 1 on CIFAR-10: ``python -m experiments.defense --flagfile=...``.

Rows: clean and each attack (non-adaptive: the attack sees the classifier
only), then ``<attack>+bpda_eot`` (adaptive: PGD through each defense with
BPDA and EOT). Columns: attack seconds, accuracy attacked, accuracy after
each defense, DNCF seconds per image. Results go batch by batch to
``<output_dir>/table1_cifar10.jsonl`` (per-image correctness keyed by image
index), so ``--resume`` continues an interrupted run without losing or
counting twice any image; the table (``table1_cifar10.md`` / ``.json``) is
built from that file. An earlier run in ``--output_dir`` is never replaced
without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app, flags
import numpy as np

from dncf_jax import io as dio
from dncf_jax.defense import DefenseConfig
from experiments import cli

FLAGS = flags.FLAGS
ALL_ATTACKS = ("fgsm", "ffgsm", "bim", "pgd", "cw")
DNCF = ("dncf_per_image", "dncf_shared")
BASELINES = ("gaussian_blur", "median3x3", "jpeg", "bit_depth", "tv")
ALIASES = {"blur": "gaussian_blur", "median": "median3x3"}

flags.DEFINE_string("input", os.path.join("cifar10", "cifar10_test_2000.npz"),
                    "The labelled images: an .npz with 'images' (uint8 NHWC) "
                    "and 'labels', or a folder laid out as class_name/*.png. "
                    "Relative paths are looked up in the working directory, "
                    "then in --data_dir.")
flags.DEFINE_string("data_dir", dio.default_data_dir(),
                    "Data folder (default: $DNCF_DATA, ../shared/data, "
                    "~/.cache/dncf_jax/data).")
flags.DEFINE_string("weights", "resnet20_cifar10.npz", "ResNet-20 weights; "
                    "a relative path is looked up in the working directory, "
                    "then in --models_dir.")
flags.DEFINE_string("models_dir", dio.default_models_dir(),
                    "Model folder (default: $DNCF_MODELS, ../shared/models, "
                    "~/.cache/dncf_jax/models).")
flags.DEFINE_integer("limit", None, "Use this many images, spread evenly "
                     "over the set (every n/limit-th).")
flags.DEFINE_list("attacks", list(ALL_ATTACKS), "Attacks (rows).")
flags.DEFINE_list("defenses", list(DNCF + BASELINES), "Defenses (columns).")
flags.DEFINE_list("adaptive", ["pgd"], "Attacks also run adaptively through "
                  "each defense (BPDA + EOT); only 'pgd'; empty: none.")
flags.DEFINE_list("adaptive_defenses", [], "Defenses the adaptive attack "
                  "goes through (default: every one in --defenses).")
flags.DEFINE_integer("eot_samples", 4, "EOT draws of the purifier per step.")
flags.DEFINE_integer("batch_size", 32, "Images per batch.")
flags.DEFINE_string("output_dir", "outputs", "Folder of the table: "
                    "table1_cifar10.md, .json, .jsonl (per batch), _run.json.")
flags.DEFINE_boolean("resume", False, "Continue the run in --output_dir.")
flags.DEFINE_boolean("overwrite", False, "Start again, replacing the run in "
                     "--output_dir (an earlier run there stops the command "
                     "before any work unless --resume or --overwrite).")
flags.DEFINE_integer("stop_after_batches", None, "Debug: stop after this "
                     "many new batches (to test --resume).")
flags.DEFINE_string("compilation_cache", cli.default_cache_dir(),
                    "JAX's persistent compilation cache. Empty: off.")


# The purifier's settings, one flag per DefenseConfig field (both modes run).
DNCF_FLAGS = cli.define_config_flags(
    DefenseConfig(), rename={"lr": "learning_rate", "norm": "batch_norm"},
    skip=("mode",),
    notes={"epsilon": "On the images' 0-1 scale.",
           "seed": "Also seeds the attacks."})
for _name in DNCF_FLAGS:
  flags.declare_key_flag(_name)

STEM = "table1_cifar10"


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def select(n: int, limit) -> np.ndarray:
  """Indices of ``limit`` images spread evenly (the set is sorted by class)."""
  if limit is None or limit >= n:
    return np.arange(n)
  if limit < 1:
    raise ValueError(f"--limit must be >= 1, got {limit}")
  return (np.arange(limit) * n) // limit


def parse_lists():
  from dncf_jax import attacks
  atk = [a for a in FLAGS.attacks if a]
  bad = [a for a in atk if a not in attacks.ATTACKS]
  if bad:
    raise ValueError(f"unknown attack(s) {bad}; choose from {sorted(attacks.ATTACKS)}")
  dfs = [ALIASES.get(d, d) for d in FLAGS.defenses if d]
  bad = [d for d in dfs if d not in DNCF + BASELINES]
  if bad:
    raise ValueError(f"unknown defense(s) {bad}; choose from "
                     f"{sorted(DNCF + BASELINES + tuple(ALIASES))}")
  ada = [a for a in FLAGS.adaptive if a]
  if any(a != "pgd" for a in ada):
    raise ValueError(f"--adaptive takes only pgd, got {ada}")
  ada_defs = [ALIASES.get(d, d) for d in FLAGS.adaptive_defenses if d]
  bad = [d for d in ada_defs if d not in dfs]
  if bad:
    raise ValueError(f"--adaptive_defenses {bad}: each must be in --defenses")
  ada_defs = ada_defs or dfs
  if FLAGS.batch_size < 1:
    raise ValueError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  if FLAGS.eot_samples < 1:
    raise ValueError("--eot_samples must be >= 1")
  return atk, dfs, ada, ada_defs


def defense_config(mode: str):
  """The purifier's config of ``mode`` from the flags, validated."""
  cfg = DefenseConfig.from_flat(**cli.config_values(DNCF_FLAGS), mode=mode)
  cfg.validate()
  return cfg


def resolve(path: str, folder: str, flag: str) -> str:
  """``path`` as given, or relative to ``folder``; errors name both tries."""
  if os.path.exists(path):
    return path
  alt = os.path.join(folder, path)
  if os.path.exists(alt):
    return alt
  raise FileNotFoundError(f"{flag} not found: {path} (also tried {alt})")


# ---------------------------------------------------------------------------
# Per-batch records and the table
# ---------------------------------------------------------------------------


def read_records(path: str) -> list[dict]:
  """Complete lines of the JSONL (a line cut by an interruption is dropped)."""
  if not os.path.isfile(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return out


def open_records(jsonl: str, meta_path: str, meta: dict, keep: bool,
                 rewrite: bool = True) -> list[dict]:
  """The records a run starts from. With ``keep`` and a run in ``meta_path``:
  its settings must equal ``meta`` (else ``ValueError`` naming the keys),
  and the records of ``jsonl`` are returned (``rewrite``: written back
  without a line cut by an interruption). Otherwise a new run: ``jsonl``
  emptied, ``meta`` written, no records."""
  if keep and os.path.isfile(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    new = json.loads(json.dumps(meta))
    if old != new:
      diff = [k for k in new if old.get(k) != new[k]]
      raise ValueError(f"--resume: settings differ from the run in "
                       f"{os.path.dirname(meta_path)} ({', '.join(diff)})")
    records = read_records(jsonl)
    if rewrite:
      with open(jsonl, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return records
  open(jsonl, "w").close()
  with open(meta_path, "w") as f:
    json.dump(meta, f, indent=1)
  return []


def build_table(records: list[dict], attacks: list[str], defenses: list[str],
                adaptive: list[str]) -> dict:
  """Accuracies over every image recorded once (the last record wins)."""
  per_row: dict[str, dict] = {}
  for r in records:
    row = per_row.setdefault(r["row"], dict(correct={}, attack_seconds=0.0,
                                            defense_seconds={}, images=set()))
    for i, k in enumerate(r["indices"]):
      row["images"].add(k)
      for col, vals in r["correct"].items():
        row["correct"].setdefault(col, {})[k] = vals[i]
    if r["indices"][0] not in row.setdefault("batches", set()):
      row["batches"].add(r["indices"][0])
      row["attack_seconds"] += r.get("attack_seconds", 0.0)
      for d, s in r.get("defense_seconds", {}).items():
        row["defense_seconds"][d] = row["defense_seconds"].get(d, 0.0) + s
  rows = []
  order = ["clean"] + attacks + [f"{a}+bpda_eot" for a in adaptive]
  for name in order:
    if name not in per_row:
      continue
    row = per_row[name]
    n = len(row["images"])
    acc = {c: 100.0 * float(np.mean(list(v.values())))
           for c, v in row["correct"].items()}
    dn_secs = {d: row["defense_seconds"][d] / n for d in DNCF
               if d in row["defense_seconds"]}
    rows.append(dict(row=name, images=n,
                     attack_seconds=(None if name == "clean"
                                     else row["attack_seconds"]),
                     accuracy_attacked=acc.get("attacked"),
                     defended={d: acc.get(d) for d in defenses},
                     dncf_seconds_per_image=dn_secs))
  return dict(rows=rows)


# The purifier settings the table's note shows (flag names; a record may
# hold the config's own field name).
SHOWN = ("iterations", "channels", "learning_rate", "beta", "rho", "epsilon",
         "gamma")
SHOWN_ALIASES = {"learning_rate": "lr"}


def to_markdown(table: dict, defenses: list[str], meta: dict) -> str:
  head = (["row", "images", "attack s", "acc. attacked"]
          + [f"acc. {d}" for d in defenses]
          + [f"{d} s/img" for d in DNCF if d in defenses])
  fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in table["rows"]:
    cells = [r["row"], str(r["images"]), fmt(r["attack_seconds"], 1),
             fmt(r["accuracy_attacked"])]
    cells += [fmt(r["defended"][d]) for d in defenses]
    cells += [fmt(r["dncf_seconds_per_image"].get(d), 3) for d in DNCF
              if d in defenses]
    lines.append("| " + " | ".join(cells) + " |")
  dncf = {k: {f: v.get(f, v.get(SHOWN_ALIASES.get(f))) for f in SHOWN}
          for k, v in meta["dncf"].items()}
  notes = ["", "Accuracy in %; every image counted (also those the model "
           "gets wrong clean). DNCF settings: " + json.dumps(dncf)
           + "; the purified image is f(y) at the end of the fixed budget. "
           "Seconds include compilation on the first batch."]
  if meta["adaptive"]:
    back = meta.get("backward", {})
    how = "; ".join(f"{d}: {back.get(d, 'identity')}"
                    for d in meta["adaptive_defenses"])
    notes.append(f"Rows `*+bpda_eot`: PGD through each defense (column) with "
                 f"BPDA (backward pass, {how}) and EOT over "
                 f"{meta['eot_samples']} purifier draws per step for DNCF "
                 "(one for the deterministic baselines).")
  return "\n".join(lines + notes) + "\n"


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  atk_names, def_names, ada, ada_defs = parse_lists()
  cfgs = {"dncf_per_image": defense_config("per_image"),
          "dncf_shared": defense_config("shared")}
  if FLAGS.resume and FLAGS.overwrite:
    raise ValueError("--resume continues the run in --output_dir, "
                     "--overwrite replaces it: pass one of them")
  jsonl = os.path.join(FLAGS.output_dir, f"{STEM}.jsonl")
  table_json = os.path.join(FLAGS.output_dir, f"{STEM}.json")
  if not FLAGS.resume:
    cli.refuse_overwrite([table_json, jsonl], FLAGS.overwrite,
                         "--resume (to continue that run) or another "
                         "--output_dir")
  data = resolve(FLAGS.input, FLAGS.data_dir, "--input")
  weights = resolve(FLAGS.weights, FLAGS.models_dir, "--weights")
  images, labels = dio.load_labelled_images(data, "--input")
  sel = select(len(images), FLAGS.limit)
  import jax
  cli.use_compilation_cache(FLAGS.compilation_cache)
  from dncf_jax import (adaptive, attacks, classifiers, defense,
                        defense_baselines)

  os.makedirs(FLAGS.output_dir, exist_ok=True)
  meta = dict(data=os.path.abspath(data), images=sel.tolist(),
              attacks=atk_names, defenses=def_names, adaptive=ada,
              adaptive_defenses=ada_defs,
              backward={d: adaptive.BACKWARD.get(d, "identity")
                        for d in ada_defs},
              eot_samples=FLAGS.eot_samples, batch_size=FLAGS.batch_size,
              seed=FLAGS.seed,
              dncf={k: dataclasses.asdict(v) for k, v in cfgs.items()
                    if k in def_names})
  meta_path = os.path.join(FLAGS.output_dir, f"{STEM}_run.json")
  records = open_records(jsonl, meta_path, meta, keep=FLAGS.resume)
  done = {(r["row"], r["indices"][0]) for r in records}

  apply_fn, params = classifiers.load_resnet20(weights)
  logits_fn = jax.jit(lambda x: apply_fn(params, x))
  predict = lambda x: np.argmax(np.asarray(logits_fn(x)), -1)

  def run_defense(name, x, idx):
    t = time.perf_counter()
    if name in DNCF:
      out = defense.purify(x, cfgs[name], jax.random.key(FLAGS.seed),
                           indices=idx)
    else:
      out = np.asarray(defense_baselines.defend(name, x))
    return out, time.perf_counter() - t

  def adaptive_pgd(name):
    """PGD through defense ``name``: BPDA with its approximation
    (:data:`adaptive.APPROXIMATIONS`), EOT over DNCF's randomness."""
    if name in DNCF:
      fwd, approx, samples = defense.forward(cfgs[name]), None, FLAGS.eot_samples
    else:
      (fwd, approx), samples = adaptive.baseline(name), 1
    return jax.jit(lambda x, y, k: adaptive.eot_pgd(
        logits_fn, fwd, x, y, k, samples=samples, approx=approx))

  adaptive_fns = {}
  rows = ["clean"] + atk_names + [f"{a}+bpda_eot" for a in ada]
  batches = [sel[i:i + FLAGS.batch_size]
             for i in range(0, len(sel), FLAGS.batch_size)]
  total = len(batches) * len(rows)
  n_done = sum(1 for b in batches for r in rows if (r, int(b[0])) in done)
  n_done0 = n_done
  new_batches, t0, imgs0 = 0, time.perf_counter(), 0
  key = jax.random.key(FLAGS.seed)
  record = cli.run_record()
  print(f"defense: {len(sel)} images, {len(rows)} rows, {len(def_names)} "
        f"defenses, {total - n_done} of {total} batch-rows to run, device "
        f"{record['device']['kind']} ({record['device']['backend']})",
        flush=True)
  if n_done < total:
    print("compiling (the first batch compiles the attacks and purifiers; "
          "cached afterwards) ...", flush=True)
  with open(jsonl, "a") as out_f:
    for b, idx in enumerate(batches):
      todo = [r for r in rows if (r, int(idx[0])) not in done]
      if not todo:
        continue
      x, y = images[idx], labels[idx]
      for row in todo:
        rec = dict(row=row, indices=idx.tolist(), correct={},
                   defense_seconds={})
        bkey = jax.random.fold_in(key, int(idx[0]))
        if row.endswith("+bpda_eot"):
          for d in ada_defs:
            if d not in adaptive_fns:
              adaptive_fns[d] = adaptive_pgd(d)
            t = time.perf_counter()
            adv = np.asarray(adaptive_fns[d](x, y, bkey))
            rec["attack_seconds"] = (rec.get("attack_seconds", 0.0)
                                     + time.perf_counter() - t)
            pur, _ = run_defense(d, adv, idx)
            rec["correct"][d] = (predict(pur) == y).tolist()
        else:
          if row == "clean":
            adv = x
          else:
            t = time.perf_counter()
            adv = np.asarray(attacks.attack(row, logits_fn, x, y, key=bkey))
            rec["attack_seconds"] = time.perf_counter() - t
          rec["correct"]["attacked"] = (predict(adv) == y).tolist()
          for d in def_names:
            pur, secs = run_defense(d, adv, idx)
            rec["defense_seconds"][d] = secs
            rec["correct"][d] = (predict(pur) == y).tolist()
        out_f.write(json.dumps(rec) + "\n")
        out_f.flush()
        records.append(rec)
        n_done += 1
      new_batches += 1
      imgs0 += len(idx)
      elapsed = time.perf_counter() - t0
      left = (total - n_done) * elapsed / max(n_done - n_done0, 1)
      print(f"[{n_done}/{total} batch-rows] images "
            f"{min((b + 1) * FLAGS.batch_size, len(sel))}/{len(sel)}, "
            f"{cli.duration(elapsed)} elapsed, ETA {cli.duration(left)}, "
            f"{imgs0 / elapsed:.2f} images/s (all rows)", flush=True)
      if FLAGS.stop_after_batches and new_batches >= FLAGS.stop_after_batches:
        print(f"stopped after {new_batches} batch(es); continue with --resume",
              flush=True)
        return

  table = dict(record, **build_table(records, atk_names, def_names, ada))
  table["meta"] = meta | dict(images=len(sel), argv=sys.argv[1:],
                              device=jax.devices()[0].device_kind,
                              num_devices=jax.device_count())
  tmp = table_json + ".tmp"
  with open(tmp, "w") as f:
    json.dump(table, f, indent=1)
  os.replace(tmp, table_json)
  md = to_markdown(table, def_names, meta)
  with open(os.path.join(FLAGS.output_dir, f"{STEM}.md"), "w") as f:
    f.write(md)
  print(md, flush=True)
  print(summary(table, time.perf_counter() - t0, table_json), flush=True)


def summary(table: dict, seconds: float, path: str) -> str:
  """The one-line summary of a finished table, numbers rounded."""
  rows = {r["row"]: r for r in table["rows"]}
  parts = [f"{table['meta']['images']} images, {len(rows)} rows"]
  clean = rows.get("clean")
  if clean is not None and clean["accuracy_attacked"] is not None:
    parts.append(f"clean accuracy {clean['accuracy_attacked']:.1f} %")
  attacked = [r for name, r in rows.items() if name != "clean"]
  if attacked:
    best = {}
    for r in attacked:
      for d, acc in r["defended"].items():
        if acc is not None:
          best.setdefault(d, []).append(acc)
    if best:
      d, accs = max(best.items(), key=lambda kv: min(kv[1]))
      parts.append(f"worst-row accuracy of the strongest defense ({d}) "
                   f"{min(accs):.1f} %")
  parts.append(f"{seconds:.0f} s this run")
  return "defense: " + ", ".join(parts) + f" -> {path}"


if __name__ == "__main__":
  cli.run_main(main)
