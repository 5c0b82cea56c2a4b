"""Reading images and masks, and the benchmark inputs of ``BENCHMARKS.md``.

Reading only: nothing here writes files or prints. Where the data is read
from, when no folder is given: :func:`default_data_dir` and
:func:`default_models_dir`; ``python -m experiments.fetch_data`` downloads
the files there (``data_manifest.json`` lists them).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(path: str) -> Image.Image:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such image file: {path}")
  try:
    im = Image.open(path)
    im.load()
  except Exception as e:  # PIL raises several types for unreadable files
    raise ValueError(f"cannot read {path} as an image: {e}") from e
  return im


def to_float(im: Image.Image, gray: bool = False) -> np.ndarray:
  """A PIL image as float32 (H, W, 3) in [0, 1] ((H, W, 1) when ``gray``)."""
  if gray:
    return (np.asarray(im.convert("L"), np.float32) / 255.0)[:, :, None]
  return np.asarray(im.convert("RGB"), np.float32) / 255.0


def load_image(path: str, size: Optional[tuple[int, int]] = None,
               keep_gray: bool = True) -> np.ndarray:
  """Loads an image as float32 (H, W, C) in [0, 1].

  Gray images give one channel when ``keep_gray``; ``size`` = (W, H)
  resizes with Lanczos as the benchmark protocol does.
  """
  im = _open(path)
  gray = keep_gray and im.mode in ("L", "I", "I;16", "F", "1", "LA")
  if size is not None:
    im = im.convert("L" if gray else "RGB").resize(size, Image.LANCZOS)
  return to_float(im, gray)


def load_mask(path: str, size: Optional[tuple[int, int]] = None) -> np.ndarray:
  """Loads a mask as float32 (H, W) with 1 = known pixel (``> 0.5``)."""
  im = _open(path).convert("L")
  if size is not None:
    im = im.resize(size, Image.NEAREST)
  return (np.asarray(im, np.float32) / 255.0 > 0.5).astype(np.float32)


def from_uint8(a: np.ndarray) -> np.ndarray:
  return np.asarray(a, np.float32) / 255.0


# ---------------------------------------------------------------------------
# The cpu-small profile of BENCHMARKS.md (v1)
# ---------------------------------------------------------------------------

BENCHMARK_TASKS = ("denoise", "sr", "inpaint1", "inpaint2", "vase", "flash")


def _dip(data_dir: str, name: str) -> str:
  path = os.path.join(data_dir, "dip", name)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"benchmark image {path} is missing: run `python -m "
        "experiments.fetch_data --only=dip`, or point the data folder "
        f"(--data_dir, ${DATA_ENV}) at one that has dip/")
  return path


def add_noise(clean: np.ndarray, sigma255: float, seed: int) -> np.ndarray:
  """``clip(clean + sigma/255 * N(0, 1), 0, 1)`` with ``default_rng(seed)``
  (the protocol's noisy images use sigma 25)."""
  noise = np.random.default_rng(seed).standard_normal(clean.shape)
  return np.clip(clean + (sigma255 / 255.0) * noise, 0, 1).astype(np.float32)


def _sr_pair(hr: Image.Image, factor: int = 4) -> dict:
  """The protocol's x``factor`` SR input: the Lanczos LR of ``hr`` and ``hr``."""
  w, h = hr.size
  lr = hr.resize((w // factor, h // factor), Image.LANCZOS)
  return dict(observation=to_float(lr), ground_truth=to_float(hr))


def benchmark_input(task: str, data_dir: str) -> dict:
  """The exact inputs of a cpu-small task.

  Returns a dict with ``observation`` and, where they exist,
  ``ground_truth``, ``mask`` (1 = known) and ``flash``.
  """
  if task == "denoise":
    gt = to_float(_open(_dip(data_dir, "F16_GT.png")))[192:320, 192:320]
    return dict(observation=add_noise(gt, 25, 0), ground_truth=gt)
  if task == "sr":
    hr = _open(_dip(data_dir, "zebra_GT.png")).convert("RGB")
    return _sr_pair(Image.fromarray(np.asarray(hr)[130:258, 228:356]))
  if task in ("inpaint1", "inpaint2", "vase"):
    name, size = {"inpaint1": ("kate", (128, 128)),
                  "inpaint2": ("library", (176, 112)),
                  "vase": ("vase", (128, 128))}[task]
    img = load_image(_dip(data_dir, f"{name}.png"), size, keep_gray=False)
    mask = load_mask(_dip(data_dir, f"{name}_mask.png"), size)
    out = dict(observation=img * mask[:, :, None], mask=mask)
    if task != "vase":
      out["ground_truth"] = img
    return out
  if task == "flash":
    def load(name):
      im = _open(_dip(data_dir, name)).convert("RGB").resize((140, 128),
                                                             Image.LANCZOS)
      return to_float(im)[0:128, 6:134]
    return dict(observation=load("cave01_01_noflash.jpg"),
                flash=load("cave01_00_flash.jpg"))
  raise ValueError(f"unknown benchmark task {task!r}; "
                   f"choose one of {BENCHMARK_TASKS}")


PHOTO_TASKS = ("denoise25", "denoise50", "sr", "inpaint")


def photo_files(data_dir: str) -> list[str]:
  """The ``bsd20`` photos in sorted file order (the ``photos`` profile)."""
  folder = os.path.join(data_dir, "bsd20")
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"no bsd20 folder in {data_dir}: run "
                            "python -m experiments.fetch_data --only=bsd20")
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith((".png", ".jpg", ".jpeg")))


def photo_input(task: str, path: str, i: int) -> dict:
  """The ``photos`` profile's input for the ``i``-th photo (``path``):
  ``observation``, ``ground_truth`` and, for inpainting, ``mask``."""
  if task not in PHOTO_TASKS:
    raise ValueError(f"unknown photo task {task!r}; choose one of {PHOTO_TASKS}")
  im = _open(path).convert("RGB")
  gt = to_float(im)
  if task in ("denoise25", "denoise50"):
    sigma, seed = (25, i) if task == "denoise25" else (50, 100 + i)
    return dict(observation=add_noise(gt, sigma, seed), ground_truth=gt,
                sigma255=sigma)
  if task == "sr":
    h, w = gt.shape[:2]
    r0, c0 = (h % 4) // 2, (w % 4) // 2
    hr = np.asarray(im)[r0:r0 + h - h % 4, c0:c0 + w - w % 4]
    return _sr_pair(Image.fromarray(hr))
  mask = (np.random.default_rng(1000 + i).random(gt.shape[:2]) < 0.5
          ).astype(np.float32)
  return dict(observation=gt * mask[:, :, None], ground_truth=gt, mask=mask)


SET5_TASKS = ("denoise", "sr")


def set5_inputs(task: str, data_dir: str,
                size: int = 128) -> list[tuple[str, dict]]:
  """The ``set5`` check of ``BENCHMARKS.md``: (name, inputs) per image.

  The five colour images of ``cset5/`` in sorted file order, each
  center-cropped to ``size`` (128 in the protocol); denoise adds
  ``25/255 * default_rng(i)`` noise to the i-th, SR x4 takes the Lanczos
  resize to ``size/4``. Inputs as :func:`benchmark_input` returns them.
  """
  if task not in SET5_TASKS:
    raise ValueError(f"unknown set5 task {task!r}; choose one of {SET5_TASKS}")
  folder = os.path.join(data_dir, "cset5")
  files = sorted(f for f in os.listdir(folder)
                 if f.lower().endswith(IMAGE_EXTENSIONS)) if os.path.isdir(
                     folder) else []
  if not files:
    raise FileNotFoundError(
        f"no images in {folder}: run `python -m experiments.fetch_data "
        f"--only=cset5`, or point the data folder (--data_dir, ${DATA_ENV}) "
        "at one that has cset5/")
  out = []
  for i, f in enumerate(files):
    im = _open(os.path.join(folder, f)).convert("RGB")
    w, h = im.size
    if min(w, h) < size:
      raise ValueError(f"{f} is {w}x{h}, smaller than the {size}x{size} crop")
    r, c = (h - size) // 2, (w - size) // 2
    crop = im.crop((c, r, c + size, r + size))
    name = os.path.splitext(f)[0]
    if task == "denoise":
      gt = to_float(crop)
      out.append((name, dict(observation=add_noise(gt, 25, i), ground_truth=gt)))
    else:
      out.append((name, _sr_pair(crop)))
  return out


DATA_ENV = "DNCF_DATA"
MODELS_ENV = "DNCF_MODELS"
CACHE_DIR = os.path.join("~", ".cache", "dncf_jax")


def _default_dir(kind: str, env: str) -> str:
  if os.environ.get(env):
    return os.path.abspath(os.path.expanduser(os.environ[env]))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  shared = os.path.normpath(os.path.join(root, "..", "shared", kind))
  if os.path.isdir(shared):
    return shared
  return os.path.abspath(os.path.expanduser(os.path.join(CACHE_DIR, kind)))


def default_data_dir() -> str:
  """The data folder when none is given: ``$DNCF_DATA``; else
  ``../shared/data`` beside the repository, when it exists; else
  ``~/.cache/dncf_jax/data`` (where ``experiments.fetch_data`` puts it)."""
  return _default_dir("data", DATA_ENV)


def default_models_dir() -> str:
  """The model folder when none is given: ``$DNCF_MODELS``; else
  ``../shared/models`` beside the repository, when it exists; else
  ``~/.cache/dncf_jax/models``."""
  return _default_dir("models", MODELS_ENV)


def data_dir(flag: Optional[str] = None) -> str:
  """``flag`` when given (a command's ``--data_dir``), else :func:`default_data_dir`."""
  return os.path.abspath(os.path.expanduser(flag)) if flag else default_data_dir()


def models_dir(flag: Optional[str] = None) -> str:
  """``flag`` when given, else :func:`default_models_dir`."""
  return os.path.abspath(os.path.expanduser(flag)) if flag else default_models_dir()


def load_cifar10_test(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """The 2000-image CIFAR-10 test subset: float32 NHWC in [0, 1], int labels."""
  path = os.path.join(data_dir, "cifar10", "cifar10_test_2000.npz")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} is missing: run `python -m experiments.fetch_data "
        f"--only=cifar10`, or point the data folder (--data_dir, ${DATA_ENV}) "
        "at one that has cifar10/")
  with np.load(path) as f:
    return from_uint8(f["images"]), np.asarray(f["labels"], np.int32)


def sample_image() -> np.ndarray:
  """scikit-image's bundled astronaut, 128x128 around the face, float RGB in [0, 1].

  The no-download default of ``python -m experiments.denoise`` and of the tests.
  """
  import skimage.data
  im = Image.fromarray(skimage.data.astronaut()[0:256, 128:384])
  return np.asarray(im.resize((128, 128), Image.LANCZOS), np.float32) / 255.0


def load_labelled_images(path: str, what: str = "data"
                         ) -> tuple[np.ndarray, np.ndarray]:
  """A labelled set: an npz with ``images`` (uint8 NHWC) and ``labels``, or a
  folder ``class_name/*.png`` (classes in sorted order). Float32 in [0, 1]."""
  if os.path.isdir(path):
    classes = sorted(d for d in os.listdir(path)
                     if os.path.isdir(os.path.join(path, d)))
    ims, labels = [], []
    for c, name in enumerate(classes):
      folder = os.path.join(path, name)
      for f in sorted(os.listdir(folder)):
        if f.lower().endswith(".png"):
          ims.append(np.asarray(_open(os.path.join(folder, f)).convert("RGB")))
          labels.append(c)
    if not ims:
      raise ValueError(f"{what} folder {path} has no class_name/*.png images")
    shapes = {im.shape for im in ims}
    if len(shapes) != 1:
      raise ValueError(f"{what} images differ in size: {sorted(shapes)[:3]}")
    images, labels = np.stack(ims), np.asarray(labels)
  elif os.path.isfile(path):
    try:
      with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    except (KeyError, OSError, ValueError) as e:
      raise ValueError(f"{what} {path}: needs an npz with 'images' and "
                       f"'labels' ({e})")
  else:
    raise FileNotFoundError(f"{what} not found: {path}")
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"{what} images must be uint8 (N, H, W, 3), got "
                     f"{images.dtype} {images.shape}")
  if labels.shape != (images.shape[0],):
    raise ValueError(f"{what} labels must have shape ({images.shape[0]},), "
                     f"got {labels.shape}")
  return from_uint8(images), np.asarray(labels, np.int32)
