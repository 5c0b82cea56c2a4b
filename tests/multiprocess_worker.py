"""One process of ``test_multiprocess.py``: restore_batch and purify on a
mesh over every device of every process; process 0 writes the results.

    python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
"""

import sys

import jax
import numpy as np


def main(pid: int, nproc: int, port: int, out: str) -> None:
  if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc,
                               process_id=pid)
  import dncf_jax as dn
  from dncf_jax import defense, engine, physics
  assert jax.device_count() == 2, jax.devices()
  rng = np.random.default_rng(0)
  obs = [np.clip(0.5 + 0.2 * rng.standard_normal((16, 16, 3)), 0, 1)
         .astype(np.float32) for _ in range(3)]   # 3: padded to 4 on 2 devices
  cfg = dn.DNCFConfig.from_flat(iterations=4, channels=4, scales=2,
                                skip_channels=2, checkpoint_every=2)
  keys = list(jax.random.split(jax.random.key(0), 3))
  rs = dn.restore_batch(obs, physics.Denoise(noise_sigma=0.1), cfg, keys,
                        mesh=engine.batch_mesh())
  pur = defense.purify(np.stack(obs),
                       defense.DefenseConfig(iterations=3, channels=4))
  if pid == 0:
    np.savez(out, images=np.stack([r.image for r in rs]),
             data=np.stack([r.history["data"] for r in rs]), purified=pur)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
