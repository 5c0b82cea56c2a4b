"""The Colab notebooks run top to bottom in their small setting (half of them:
the others are in ``test_notebooks_b.py``; see ``notebook_runner.py``)."""

import os

import nbformat
import pytest

from notebook_runner import COLAB, EXPECTED, NOTEBOOKS, run_and_check


def test_every_notebook_has_expectations():
  assert NOTEBOOKS, f"no notebooks in {COLAB}"
  assert sorted(EXPECTED) == NOTEBOOKS


def test_notebooks_are_committed_without_outputs():
  for name in NOTEBOOKS:
    nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, (
            f"{name}: clear the outputs before committing")


@pytest.mark.parametrize("name", NOTEBOOKS[0::2])
def test_notebook_runs_in_small_setting(name, monkeypatch):
  run_and_check(name, monkeypatch)


def _setup_cell(name):
  nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
  return next(c.source for c in nb.cells if c.cell_type == "code")


def test_every_notebook_starts_with_the_same_setup_cell():
  """The same cell everywhere but for FETCH, the data the notebook reads."""
  import re
  cells = {name: _setup_cell(name) for name in NOTEBOOKS}
  fetch = {name: re.search(r'^FETCH = "([^"]*)"', c, re.M).group(1)
           for name, c in cells.items()}
  same = {re.sub(r'^FETCH = "[^"]*"', 'FETCH = ""', c, flags=re.M)
          for c in cells.values()}
  assert len(same) == 1, "the setup cells differ"
  assert "google.colab" in cells[NOTEBOOKS[0]]
  assert fetch == {"01_quickstart.ipynb": "", "02_photography.ipynb": "dip",
                   "03_adversarial_defense.ipynb": "cifar10,resnet20",
                   "04_convexification.ipynb": ""}


def test_colab_setup_finds_a_copy_or_says_what_to_do(tmp_path, monkeypatch):
  """The Colab branch's source lookup (it cannot pip install here)."""
  import subprocess
  import zipfile
  src = _setup_cell(NOTEBOOKS[0]).split("repo = None")[0]
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv("DNCF_REPO_DIR", raising=False)
  scope: dict = {}
  exec(src, scope)
  assert scope["REPO_URL"] == "git+https://github.com/<org>/dncf-jax@v0.1.0"
  with pytest.raises(RuntimeError, match="set ORG.*dncf-jax.zip"):
    scope["repository_copy"]()
  # A real URL: a shallow clone of its tag.
  calls = []
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
  scope["REPO_URL"] = "git+https://github.com/acme/dncf-jax@v0.1.0"
  assert scope["repository_copy"]() == "dncf-jax"
  assert calls == [["git", "clone", "--depth=1", "--branch", "v0.1.0",
                    "https://github.com/acme/dncf-jax", "dncf-jax"]]
  # An uploaded archive of the repository's folder.
  with zipfile.ZipFile("dncf-jax.zip", "w") as z:
    z.writestr("dncf-jax-main/pyproject.toml", "[project]\n")
  assert scope["repository_copy"]() == os.path.join("dncf-jax-unzipped",
                                                    "dncf-jax-main")
  # A folder named by DNCF_REPO_DIR comes first.
  (tmp_path / "drive").mkdir()
  (tmp_path / "drive" / "pyproject.toml").write_text("")
  monkeypatch.setenv("DNCF_REPO_DIR", str(tmp_path / "drive"))
  assert scope["repository_copy"]() == str(tmp_path / "drive")
