"""The CIFAR-10 ResNet-20 of ``BENCHMARKS.md`` (He et al., option A).

NHWC, inference-mode BatchNorm (eps 1e-5), the ImageNet mean/std
normalisation inside, so the model takes RGB images in [0, 1].
:func:`load_resnet20` converts the PyTorch (OIHW) weights of
``models/resnet20_cifar10.npz``.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dncf_jax.nets import PadConv

Array = jax.Array

CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5


class InferenceBN(nn.Module):
  """BatchNorm with stored statistics: ``(x - mean) / sqrt(var + eps) * s + b``."""

  eps: float = BN_EPS

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = self.param("mean", nn.initializers.zeros, (c,))
    var = self.param("var", nn.initializers.ones, (c,))
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


def _conv(features: int, stride: int, impl: str, name: str) -> PadConv:
  if impl == "auto" and jax.default_backend() == "cpu":
    impl = "im2col"   # the faster of im2col and taps on 32x32 attack batches
  return PadConv(features, 3, stride, pad="zero", use_bias=False, impl=impl,
                 name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs; option-A shortcut (subsample, zero-pad channels)."""

  planes: int
  stride: int = 1
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = nn.relu(InferenceBN(name="bn1")(
        _conv(self.planes, self.stride, self.impl, "conv1")(x)))
    out = InferenceBN(name="bn2")(_conv(self.planes, 1, self.impl, "conv2")(out))
    short = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      p = self.planes // 4
      short = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (p, p)))
    return nn.relu(out + short)


class CifarResNet(nn.Module):
  """ResNet-20 for ``blocks=(3, 3, 3)``; logits for NHWC images in [0, 1].

  ``impl`` picks the convolution (see :class:`dncf_jax.nets.PadConv`):
  ``auto`` is im2col on CPU, where ``lax.conv`` gradients are slow inside
  the attack loops (``taps``, the nets' CPU default, is the slower of the
  two on these small images: ``benchmarks/attacks_resnet20.py --impl``
  compares them), and ``lax.conv`` elsewhere.
  """

  blocks: Sequence[int] = (3, 3, 3)
  num_classes: int = 10
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    mean = jnp.asarray(CIFAR_MEAN, x.dtype)
    std = jnp.asarray(CIFAR_STD, x.dtype)
    x = (x - mean) / std
    x = nn.relu(InferenceBN(name="bn1")(_conv(16, 1, self.impl, "conv1")(x)))
    for i, (planes, n) in enumerate(zip((16, 32, 64), self.blocks)):
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(planes, stride, self.impl, name=f"layer{i + 1}_{j}")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="linear")(x)


def convert_torch_weights(weights: dict[str, np.ndarray],
                          dtype=jnp.float32) -> dict:
  """PyTorch state-dict arrays (``layer2.0.bn1.running_var``...) -> Flax params."""
  params: dict = {}
  for key, value in weights.items():
    if key.endswith("num_batches_tracked"):
      continue
    *path, leaf = key.split(".")
    if path and path[0].startswith("layer") and len(path) >= 2:
      path = [f"{path[0]}_{path[1]}"] + path[2:]
    value = np.asarray(value)
    if leaf == "weight" and value.ndim == 4:      # OIHW -> HWIO
      leaf, value = "kernel", value.transpose(2, 3, 1, 0)
    elif leaf == "weight" and path[-1] == "linear":
      leaf, value = "kernel", value.T
    elif leaf == "weight":                        # BatchNorm gamma
      leaf = "scale"
    else:
      leaf = {"running_mean": "mean", "running_var": "var"}.get(leaf, leaf)
    node = params
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value, dtype)
  return {"params": params}


def load_resnet20(path: str, dtype=jnp.float32, impl: str = "auto"
                  ) -> tuple[Callable[[dict, Array], Array], dict]:
  """Loads ``resnet20_cifar10.npz``: returns ``(apply_fn, params)``.

  ``apply_fn(params, images)`` gives logits (N, 10) for NHWC images in
  [0, 1], computed in the dtype of ``params`` (pass ``dtype=jnp.float64``
  with ``jax_enable_x64`` on for float64).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such model file: {path}")
  if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError("float64 weights need jax_enable_x64 (JAX_ENABLE_X64=1)")
  with np.load(path) as f:
    weights = {k: f[k] for k in f.files}
  params = convert_torch_weights(weights, dtype)
  model = CifarResNet(impl=impl)
  expected = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3), dtype))
  got = jax.tree_util.tree_map(lambda a: a.shape, params)
  want = jax.tree_util.tree_map(lambda a: a.shape, expected)
  if got != want:
    raise ValueError(f"{path} does not hold CIFAR ResNet-20 weights")

  def apply_fn(params: dict, images: Array) -> Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
    dt = params["params"]["conv1"]["kernel"].dtype
    return model.apply(params, jnp.asarray(images, dt))

  return apply_fn, params
