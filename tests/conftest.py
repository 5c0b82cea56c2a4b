import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile many small programs and run them briefly: a lower XLA
# optimisation level halves compile time (9 s -> 4 s per net gradient), and
# XLA's older CPU fusion emitters compile a restore program about a quarter
# faster (7.3-8.4 s -> 5.1-6.1 s of XLA time). Subprocess tests pass these on.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                      "--xla_cpu_use_fusion_emitters=false")

import jax  # noqa: E402
import pytest  # noqa: E402

from dncf_jax import io as dio  # noqa: E402

DATA_DIR = dio.default_data_dir()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long runs, not in the default test run")


# The longest files first (seconds per file on 2 cores, most first), so
# that the workers of `-n auto --dist loadfile` finish together.
LONGEST_FIRST = ("test_engine.py", "test_table2.py", "test_solver.py",
                 "test_tasks.py", "test_restore.py", "test_nets.py",
                 "test_experiments.py", "test_photos.py", "test_notebooks.py",
                 "test_defense_frontier.py", "test_set5_gallery.py",
                 "test_defense.py", "test_baselines.py", "test_tiles.py",
                 "test_multiprocess.py", "test_notebooks_b.py")


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def data_dir():
  if not os.path.isdir(os.path.join(DATA_DIR, "dip")):
    pytest.skip(f"data not found at {DATA_DIR}: python -m experiments.fetch_data")
  return DATA_DIR


MODELS_DIR = dio.default_models_dir()


@pytest.fixture(scope="session")
def models_dir():
  if not os.path.isfile(os.path.join(MODELS_DIR, "resnet20_cifar10.npz")):
    pytest.skip(f"weights not found at {MODELS_DIR}: python -m "
                "experiments.fetch_data --only=resnet20")
  return MODELS_DIR


@pytest.fixture(scope="session")
def cifar_dir():
  if not os.path.isfile(os.path.join(DATA_DIR, "cifar10", "cifar10_test_2000.npz")):
    pytest.skip(f"CIFAR-10 test subset not found under {DATA_DIR}: python -m "
                "experiments.fetch_data --only=cifar10")
  return DATA_DIR


@pytest.fixture(scope="session")
def cifar(cifar_dir):
  """The 2000 test images (float32 NHWC in [0, 1]) and labels."""
  return dio.load_cifar10_test(cifar_dir)


@pytest.fixture(scope="session")
def resnet20(models_dir):
  """``logits_fn(x)`` of the float32 ResNet-20, jitted (one object per session,
  so attacks compiled for it are shared between tests)."""
  from dncf_jax import classifiers
  apply_fn, params = classifiers.load_resnet20(
      os.path.join(models_dir, "resnet20_cifar10.npz"))
  return jax.jit(lambda x: apply_fn(params, x))


# Runs with equal shapes and settings share compiled programs across tests.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
