"""restore_batch and purify on JAX's multi-process runtime: two local CPU
processes (one device each, ``jax.distributed``) give what one process
with two devices gives."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(pid: int, nproc: int, port: int, out: str, devices: int):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
             + os.environ["XLA_FLAGS"],                # as conftest.py sets
             PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, WORKER, str(pid), str(nproc),
                           str(port), out], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait(procs) -> None:
  for p in procs:
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]


# Three processes compiling at once: about 90 s on 2 cores.
@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
  one, two = str(tmp_path / "one.npz"), str(tmp_path / "two.npz")
  port = _free_port()
  _wait([_start(0, 1, 0, one, devices=2)] +
        [_start(i, 2, port, two, devices=1) for i in range(2)])
  a, b = np.load(one), np.load(two)
  for k in ("images", "data", "purified"):
    np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)
  assert a["images"].shape == (3, 16, 16, 3)
