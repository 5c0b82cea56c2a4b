"""The Flax CIFAR ResNet-20 against the reference logits of BENCHMARKS.md."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dncf_jax import classifiers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_X64_SCRIPT = """
import json, os, sys
import jax, numpy as np
from dncf_jax import classifiers, io as dio
assert jax.config.jax_enable_x64
models = sys.argv[1]
ref = np.load(os.path.join(models, "resnet20_cifar10_reference_logits.npz"))
images, labels = dio.load_cifar10_test(sys.argv[2])
f, p = classifiers.load_resnet20(os.path.join(models, "resnet20_cifar10.npz"),
                                 dtype=jax.numpy.float64)
x = images[ref["indices"]].astype(np.float64)
logits = f(p, x)
print(json.dumps(dict(dtype=str(logits.dtype),
                      err=float(np.abs(np.asarray(logits) - ref["logits"]).max()))))
"""


def _reference(models_dir):
  with np.load(os.path.join(models_dir, "resnet20_cifar10_reference_logits.npz")) as f:
    return f["indices"], f["logits"]


def test_float64_matches_reference_logits_in_subprocess(models_dir, cifar_dir):
  # x64 is process-wide: a subprocess keeps it out of the other tests.
  env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  run = subprocess.run([sys.executable, "-c", _X64_SCRIPT, models_dir, cifar_dir],
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  out = json.loads(run.stdout.strip().splitlines()[-1])
  assert out["dtype"] == "float64"
  assert out["err"] < 1e-4


def test_float32_matches_reference_and_accuracy_is_sane(models_dir, cifar, resnet20):
  idx, ref = _reference(models_dir)
  images, labels = cifar
  logits = np.asarray(resnet20(jnp.asarray(images[idx])))
  assert logits.dtype == np.float32 and logits.shape == (len(idx), 10)
  assert np.abs(logits - ref).max() < 1e-3
  acc = np.mean(logits.argmax(1) == labels[idx])
  assert 0.7 <= acc <= 0.95, acc   # 100 images, 10 per class; 81% overall


def test_conv_impls_agree_with_lax_conv(models_dir, cifar):
  """Logits, and the input gradient an attack uses, for each convolution.

  The gradient is compared in float64: in float32 the convolutions'
  different rounding can flip a ReLU whose input is within 1e-6 of zero,
  which changes the gradient in that unit's receptive field (measured:
  0.017 of 16 over 152 of 12288 entries, against 1e-14 in float64).
  """
  path = os.path.join(models_dir, "resnet20_cifar10.npz")
  x = jnp.asarray(cifar[0][:4])
  fb, p = classifiers.load_resnet20(path, impl="xla")
  for impl in ("im2col", "taps"):
    fa, _ = classifiers.load_resnet20(path, impl=impl)
    np.testing.assert_allclose(jax.jit(fa)(p, x), jax.jit(fb)(p, x), atol=1e-4)
  with jax.enable_x64():
    x64 = jnp.asarray(cifar[0][:4], jnp.float64)
    grads = {}
    for impl in ("xla", "im2col", "taps"):
      f, p64 = classifiers.load_resnet20(path, jnp.float64, impl=impl)
      grads[impl] = jax.jit(jax.grad(lambda v: f(p64, v)[:, 3].sum()))(x64)
  for impl in ("im2col", "taps"):
    np.testing.assert_allclose(grads[impl], grads["xla"], atol=1e-10)


def test_weight_conversion_layout():
  w = {"conv1.weight": np.arange(16 * 3 * 9, dtype=np.float32).reshape(16, 3, 3, 3),
       "layer2.0.bn1.running_var": np.ones(32, np.float32),
       "layer2.0.bn1.weight": np.ones(32, np.float32),
       "linear.weight": np.zeros((10, 64), np.float32),
       "bn1.num_batches_tracked": np.array(5)}
  p = classifiers.convert_torch_weights(w)["params"]
  assert p["conv1"]["kernel"].shape == (3, 3, 3, 16)
  # OIHW [o, i, h, w] -> HWIO [h, w, i, o]
  assert p["conv1"]["kernel"][1, 2, 0, 5] == w["conv1.weight"][5, 0, 1, 2]
  assert set(p["layer2_0"]["bn1"]) == {"var", "scale"}
  assert p["linear"]["kernel"].shape == (64, 10)
  assert "num_batches_tracked" not in str(p)


def test_bad_inputs_raise(models_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="no such model"):
    classifiers.load_resnet20(str(tmp_path / "missing.npz"))
  with pytest.raises(ValueError, match="jax_enable_x64"):
    classifiers.load_resnet20(os.path.join(models_dir, "resnet20_cifar10.npz"),
                              dtype=jnp.float64)
  bad = tmp_path / "bad.npz"
  np.savez(bad, **{"conv1.weight": np.zeros((16, 3, 3, 3), np.float32)})
  with pytest.raises(ValueError, match="ResNet-20"):
    classifiers.load_resnet20(str(bad))
  f, p = classifiers.load_resnet20(os.path.join(models_dir, "resnet20_cifar10.npz"))
  with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
    f(p, jnp.zeros((32, 32, 3)))


@pytest.mark.slow
def test_clean_accuracy_on_all_2000_images(cifar, resnet20):
  images, labels = cifar
  preds = np.concatenate([np.asarray(resnet20(jnp.asarray(images[i:i + 500]))).argmax(1)
                          for i in range(0, len(images), 500)])
  assert np.mean(preds == labels) == pytest.approx(0.8135, abs=0.001)
