"""The other half of the Colab notebooks (see ``test_notebooks.py``)."""

import pytest

from notebook_runner import NOTEBOOKS, run_and_check


# 02_photography compiles DNCF and DIP for four tasks (75 s on 2 cores):
# slow; its runs are those of test_tasks.py and test_baselines.py.
SLOW = ("02_photography.ipynb",)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
    for n in NOTEBOOKS[1::2]])
def test_notebook_runs_in_small_setting(name, monkeypatch):
  run_and_check(name, monkeypatch)
