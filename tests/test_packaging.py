"""What ``pip install .`` gives a user: dependencies, the wheel's contents,
the version, and the library working from an installed copy."""

import email
import glob
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
  PYPROJECT = tomllib.load(_f)


def _pins() -> dict:
  pins = {}
  with open(os.path.join(ROOT, "requirements.txt")) as f:
    for line in f:
      line = line.split("#")[0].strip()
      if line:
        name, version = line.split("==")
        pins[_norm(name)] = version
  return pins


def _norm(name: str) -> str:
  return name.lower().replace("_", "-").replace(".", "-")


def test_dependency_ranges_admit_the_tested_pins():
  from packaging.requirements import Requirement
  pins = _pins()
  project = PYPROJECT["project"]
  reqs = [Requirement(r) for r in project["dependencies"]]
  reqs += [Requirement(r) for r in project["optional-dependencies"]["test"]]
  checked = []
  for r in reqs:
    pin = pins.get(_norm(r.name))
    if pin is not None:
      assert r.specifier.contains(pin), f"{r} excludes the tested {r.name}=={pin}"
      checked.append(r.name)
  # every library the package imports is declared, and pinned
  for name in ("jax", "jaxlib", "flax", "optax", "jaxopt", "dm-pix", "numpy",
               "scipy", "pillow", "scikit-image", "absl-py", "matplotlib"):
    assert name in checked, f"{name}: not in dependencies or not pinned"


def test_project_metadata():
  project = PYPROJECT["project"]
  assert project["requires-python"] == ">=3.11"
  assert set(project["optional-dependencies"]) >= {"gpu", "test", "notebooks", "bench"}
  assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == [
      "dncf_jax", "dncf_jax.*"]
  with open(os.path.join(ROOT, "LICENSE")) as f:
    assert "Apache License" in f.read(200)
  with open(os.path.join(ROOT, "CITATION.cff")) as f:
    cff = f.read()
  assert "2309.06724" in cff and "Wangni" in cff
  assert f"version: {project['version']}" in cff


def test_version_matches_the_project():
  import dncf_jax
  assert dncf_jax.__version__ == PYPROJECT["project"]["version"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """A wheel built from a copy of the project (the checkout stays clean),
  by pip with build isolation (setuptools from the package index)."""
  src = tmp_path_factory.mktemp("src")
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(os.path.join(ROOT, name), src)
  for folder in ("dncf_jax", "experiments"):
    shutil.copytree(os.path.join(ROOT, folder), src / folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
  out = tmp_path_factory.mktemp("wheel")
  r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                      "-w", str(out), str(src)], capture_output=True, text=True)
  text = r.stdout + r.stderr
  if r.returncode and any(s in text for s in ("No matching distribution",
                                              "Could not find a version",
                                              "NewConnectionError")):
    pytest.skip(f"no package index to fetch setuptools from: {text[-300:]}")
  assert r.returncode == 0, text
  (path,) = glob.glob(str(out / "dncf_jax-*.whl"))
  return path


def test_the_wheel_holds_the_library_only(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_string(z.read(meta_name).decode())
  tops = {n.split("/")[0] for n in names}
  assert "experiments" not in tops and "tests" not in tops and "benchmarks" not in tops
  assert {t for t in tops if not t.endswith(".dist-info")} == {"dncf_jax"}
  assert "dncf_jax/data_manifest.json" in names
  assert "dncf_jax/baselines/dip.py" in names
  requires = meta.get_all("Requires-Dist")
  for dep in PYPROJECT["project"]["dependencies"]:
    name = dep.split(">")[0].split("<")[0].split("=")[0]
    assert any(r.startswith(name) for r in requires), (name, requires)
  assert meta["Requires-Python"] == ">=3.11"
  assert meta["License-Expression"] == "Apache-2.0"


def test_an_installed_copy_works_outside_the_checkout(wheel, tmp_path):
  target = tmp_path / "site"
  r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                      "--target", str(target), wheel], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout + r.stderr
  from PIL import Image
  Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "photo.png")
  code = f"""
import importlib.resources, json, os
import dncf_jax as dn
assert dn.__file__.startswith({str(target)!r}), dn.__file__
x = dn.io.load_image("photo.png")
assert x.shape == (6, 8, 3), x.shape
files = json.loads((importlib.resources.files("dncf_jax") / "data_manifest.json").read_text())["files"]
assert len(files) > 30
assert not os.path.exists(os.path.join({str(target)!r}, "experiments"))
print("ok", dn.__version__)
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(target))
  r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip() == f"ok {PYPROJECT['project']['version']}"
