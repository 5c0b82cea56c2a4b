"""Clean and attacked accuracy of the CIFAR-10 ResNet-20.

    JAX_PLATFORMS=cpu python -m benchmarks.attacks_resnet20 --n=200

Clean accuracy on all 2000 test images, then each attack of the
``BENCHMARKS.md`` threat model on ``n`` images spread evenly over the set
(the file is sorted by class, so every class gets n/10). Attack seconds are
the run after compilation (compile seconds are reported beside them).
Prints one JSON object and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from dncf_jax import attacks, classifiers
from dncf_jax import io as dio


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=200, help="images per attack")
  ap.add_argument("--batch", type=int, default=100)
  ap.add_argument("--attacks", default="fgsm,ffgsm,bim,pgd,cw")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--impl", default="auto", help="conv: auto, taps, im2col or xla")
  ap.add_argument("--out", default=None, help="JSON file to write")
  args = ap.parse_args()

  images, labels = dio.load_cifar10_test(dio.default_data_dir())
  apply_fn, params = classifiers.load_resnet20(
      os.path.join(dio.default_models_dir(), "resnet20_cifar10.npz"),
      impl=args.impl)
  logits_fn = jax.jit(lambda z: apply_fn(params, z))

  def predict(x):
    return np.concatenate([np.asarray(logits_fn(x[i:i + 500])).argmax(1)
                           for i in range(0, len(x), 500)])

  t = time.time()
  clean_all = float(np.mean(predict(images) == labels))
  out = dict(device=jax.devices()[0].device_kind, host=platform.node(),
             clean_accuracy_2000=clean_all,
             clean_seconds_2000=round(time.time() - t, 2), n=args.n,
             batch=args.batch, seed=args.seed, attacks={})

  idx = np.linspace(0, len(images), args.n, endpoint=False).astype(int)
  x_all, y_all = images[idx], labels[idx]
  out["clean_accuracy_n"] = float(np.mean(predict(x_all) == y_all))
  key = jax.random.key(args.seed)
  for name in args.attacks.split(","):
    batches = [(jnp.asarray(x_all[i:i + args.batch]),
                jnp.asarray(y_all[i:i + args.batch]))
               for i in range(0, args.n, args.batch)]
    t = time.time()
    attacks.attack(name, logits_fn, *batches[0], key=key).block_until_ready()
    compile_s = time.time() - t
    t = time.time()
    advs = []
    for b, (x, y) in enumerate(batches):
      advs.append(np.asarray(attacks.attack(
          name, logits_fn, x, y, key=jax.random.fold_in(key, b))))
    seconds = time.time() - t
    adv = np.concatenate(advs)
    out["attacks"][name] = dict(
        accuracy=float(np.mean(predict(adv) == y_all)),
        seconds=round(seconds, 2), compile_plus_first_batch_s=round(compile_s, 2),
        linf_255=round(float(np.abs(adv - x_all).max()) * 255, 4),
        mean_l2=round(float(np.mean(np.sqrt(
            np.sum((adv - x_all) ** 2, axis=(1, 2, 3))))), 4))
    print(name, out["attacks"][name], flush=True)
  print(json.dumps(out, indent=1))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
