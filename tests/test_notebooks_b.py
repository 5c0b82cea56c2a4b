"""The other half of the Colab notebooks (see ``test_notebooks.py``)."""

import pytest

from notebook_runner import NOTEBOOKS, run_and_check


@pytest.mark.parametrize("name", NOTEBOOKS[1::2])
def test_notebook_runs_in_small_setting(name, monkeypatch):
  run_and_check(name, monkeypatch)
