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
