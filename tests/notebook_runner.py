"""Runs the Colab notebooks (``colab/*.ipynb``) in their small setting.

Shared by ``test_notebooks.py`` and ``test_notebooks_b.py``: pytest-xdist
runs with ``--dist loadfile`` (one file per worker), so the notebooks are
split over two files, every other one, and two workers run them at once.

Each notebook is executed with nbclient in a kernel started from this
interpreter (``sys.executable -m ipykernel_launcher``: no kernel spec has to
be installed, and the kernel sees the same packages as the tests), with
``DNCF_NOTEBOOK_SMALL=1`` and ``JAX_PLATFORMS=cpu``, in ``colab/``. A cell
error fails the test (nbclient raises ``CellExecutionError``), and each
notebook must have printed its key result (:data:`EXPECTED`).
"""

import glob
import os
import re
import sys
import time

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager

from dncf_jax import io as dio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(COLAB, "*.ipynb")))
TIMEOUT = 600  # seconds per cell

# Where the notebooks look for the shared files (same rule as theirs).
DATA_DIR = os.environ.get("DNCF_DATA") or dio.default_data_dir()
MODELS_DIR = os.environ.get("DNCF_MODELS") or dio.default_models_dir()
HAVE_MODELS = (os.path.isfile(os.path.join(MODELS_DIR, "resnet20_cifar10.npz"))
               and os.path.isfile(os.path.join(DATA_DIR, "cifar10", "cifar10_test_2000.npz")))
HAVE_CAVE = os.path.isfile(os.path.join(DATA_DIR, "dip", "cave01_00_flash.jpg"))

# What each notebook must print (regexes on its text output).
_PSNR = r"-?\d+\.\d+ dB"
_SECONDS = r"\(\d+\.\d s, compile \d+\.\d s"
EXPECTED = {
    "01_quickstart.ipynb": [
        rf"denoised: PSNR {_PSNR} \(noisy {_PSNR}\)",
        rf"beta = 1: PSNR {_PSNR}; beta = 0: PSNR {_PSNR}",
    ],
    "02_photography.ipynb": [
        rf"denoise: PSNR: guess G {_PSNR} \| DNCF {_PSNR} {_SECONDS}.*\| DIP {_PSNR} {_SECONDS}",
        rf"sr: PSNR: guess G {_PSNR} \| DNCF {_PSNR} {_SECONDS}.*\| DIP {_PSNR} {_SECONDS}",
        rf"inpaint: PSNR: guess G {_PSNR} \| DNCF {_PSNR} {_SECONDS}.*\| DIP {_PSNR} {_SECONDS}",
        (r"flash: MSE to the no-flash image: guess G \S+ \| DNCF \S+ " + _SECONDS
         if HAVE_CAVE else r"flash/no-flash: SKIPPED"),
    ],
    "03_adversarial_defense.ipynb": (
        [r"clean accuracy \d+\.\d%",
         r"attack\s+undefended\s+blur\s+DNCF",
         r"pgd\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d",
         r"BPDA\+EOT PGD .*undefended \d+\.\d%, DNCF \d+\.\d%"]
        if HAVE_MODELS else [r"SKIPPED: need .*resnet20_cifar10\.npz"]),
    "04_convexification.ipynb": [
        r"trained 15 nets",
        r"FICNN\s+moons\s+\d\.\d{3}\s+\d\.\d{3}\s+0\.000\s+0\.000",  # FICNN: convex, no violations
        r"CVXR-Net\s+spirals\s+\d\.\d{3}\s+\d\.\d{3}",
    ],
}


class _ThisInterpreter(KernelManager):
  """A kernel manager whose kernel is ``sys.executable``'s ipykernel."""

  @property
  def kernel_spec(self):
    return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"],
                      display_name="Python (tests)", language="python")


def _text(nb) -> str:
  out = []
  for cell in nb.cells:
    for o in cell.get("outputs", []):
      if o.get("output_type") == "stream":
        out.append(o.get("text", ""))
      elif "data" in o and "text/plain" in o["data"]:
        out.append(o["data"]["text/plain"])
  return "".join(out)


def execute(path: str, monkeypatch):
  """Runs the notebook at ``path`` in the small setting; returns (nb, seconds)."""
  monkeypatch.setenv("DNCF_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  # The kernel imports this checkout's package, wherever it is installed from.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  # conftest.py's XLA flags (faster compiles), and equal programs are shared
  # with earlier runs through the cache.
  monkeypatch.setenv("XLA_FLAGS", os.environ["XLA_FLAGS"])
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb, km=_ThisInterpreter(), timeout=TIMEOUT,
      resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
  t0 = time.perf_counter()
  client.execute()
  return nb, time.perf_counter() - t0


def run_and_check(name: str, monkeypatch) -> float:
  """Executes ``colab/<name>`` and checks its printed results; returns seconds."""
  nb, seconds = execute(os.path.join(COLAB, name), monkeypatch)
  text = _text(nb)
  assert "setting: SMALL" in text
  for pattern in EXPECTED[name]:
    assert re.search(pattern, text), (
        f"{name}: no output matching {pattern!r}:\n{text[-3000:]}")
  print(f"{name}: {seconds:.1f} s")
  return seconds
