"""The run engine every iterative method runs on: DNCF, DIP, DeepRED, the purifier.

A *method* is a frozen, hashable object with three traceable functions on
one problem (one image, or one group of images sharing a net):

* ``init(obs, task, key) -> (state, inputs)``: the state at iteration 0 and
  the arrays every step reads (``task`` is a pytree: its masks, flash
  images and PSFs are traced, not baked into the program);
* ``step(state, inputs) -> (state, stats)``: one iteration; ``stats`` a
  dict of scalars;
* ``checkpoint(state, inputs) -> (state, candidates, out, halt)``: scores
  the candidate answers (stacked, ``(K, H, W, C)``) at the end of a chunk,
  ``out`` a dict of per-checkpoint arrays, ``halt`` whether the problem has
  stopped (its state is frozen from then on).

The engine ``vmap``s them over a batch of problems and runs chunks of
``length`` iterations in one ``lax.scan`` (:func:`chunk`), the checkpoint
on device; a problem that halts, or reaches ``stop``, stays frozen while
the others go on. Compiled programs are cached by the method, the shapes
and the dtypes (:func:`compiled`), so a second batch of the same shapes
compiles nothing, whatever its masks. :func:`run` is the host loop: it
calls the chunk program until every problem has stopped, collects the
per-iteration and per-checkpoint history of each problem, and reports
progress.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Array = jax.Array
PyTree = Any


class Result(NamedTuple):
  """What a restoration returns (one image)."""

  image: np.ndarray            # the blind choice, (H, W, C)
  chosen: str                  # which candidate
  chosen_iteration: int        # and when it was taken
  candidates: dict             # name -> image at the last checkpoint
  history: dict                # per-iteration and per-checkpoint arrays
  noise_sigma: float           # sigma used by the blind rule
  seconds: float               # wall time of the run, compilation included
  compile_seconds: float       # of which compilation
  params: PyTree               # final theta
  y: np.ndarray                # final net input (padded)
  members: tuple = ()          # an ensemble's own results (image = their mean)


class Carry(NamedTuple):
  """What the chunk program carries for each problem of a batch."""

  state: PyTree
  it: Array        # iterations done
  halted: Array    # stopped by its own rule: frozen


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------


def padded_shape(h: int, w: int, multiple: int) -> tuple[int, int]:
  return (-(-h // multiple) * multiple, -(-w // multiple) * multiple)


def pad_to(x: Array, hp: int, wp: int) -> Array:
  """Reflect-pads ``x`` (H, W, C) at the bottom/right to ``(hp, wp)``."""
  h, w = x.shape[0], x.shape[1]
  if (h, w) == (hp, wp):
    return x
  mode = "reflect" if hp - h < h and wp - w < w else "symmetric"
  return jnp.pad(x, ((0, hp - h), (0, wp - w), (0, 0)), mode=mode)


def tree_where(cond: Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), new, old)


def psnr(candidates: Array, reference: Array) -> Array:
  """ORACLE PSNR of each stacked candidate (clipped to [0, 1])."""
  mse = jnp.mean(jnp.square(jnp.clip(candidates, 0, 1) - reference),
                 axis=tuple(range(1, candidates.ndim)))
  return -10 * jnp.log10(mse)


# ---------------------------------------------------------------------------
# Compiled programs
# ---------------------------------------------------------------------------

_CACHE: dict = {}
_COMPILES = [0]


def _signature(args) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(args)
  sig = []
  for a in leaves:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
      sharding = getattr(a, "sharding", None)
      sig.append((tuple(a.shape), str(a.dtype), getattr(a, "weak_type", False),
                  None if sharding is None else repr(sharding)))
    else:
      sig.append((type(a).__name__, a))
  return treedef, tuple(sig)


def compiled(key: Any, fn: Callable, *args, mesh: Optional[Mesh] = None
             ) -> tuple[Callable, float]:
  """``fn`` compiled for ``args``, from the cache when ``key`` and the
  arguments' shapes, dtypes and shardings were seen before.

  Returns the compiled program and the seconds spent compiling it now
  (0 from the cache). ``key`` must be hashable and name everything static
  that ``fn`` closes over (the method with its config). With ``mesh``,
  every argument's leading axis is sharded over its ``"batch"`` axis.
  """
  full = (key, _signature(args), None if mesh is None else mesh)
  hit = _CACHE.get(full)
  if hit is not None:
    return hit, 0.0
  t0 = time.perf_counter()
  if mesh is None:
    jitted = jax.jit(fn)
  else:
    batch, whole = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
    place = lambda tree: jax.tree_util.tree_map(
        lambda a: batch if len(np.shape(a)) else whole, tree)
    jitted = jax.jit(fn, in_shardings=place(args),
                     out_shardings=place(jax.eval_shape(fn, *args)))
  program = jitted.lower(*args).compile()
  _CACHE[full] = program
  _COMPILES[0] += 1
  return program, time.perf_counter() - t0


def unseeded(method):
  """``method`` with its config's seed at 0: the seed only makes PRNG keys on
  the host, so runs that differ in it alone share their compiled programs
  (:func:`compiled` keys on the method)."""
  return dataclasses.replace(method, config=method.config.replace(seed=0))


def free_bytes() -> Optional[int]:
  """Memory free for a program: the first device's, or the host's
  ``MemAvailable`` on CPU; ``None`` when unknown."""
  stats = jax.local_devices()[0].memory_stats()
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def check_memory(program, batch: int, what: str) -> None:
  """Raises ``ValueError`` when ``program`` (compiled for ``batch``
  problems) needs more memory than :func:`free_bytes`, with a batch size
  that would fit."""
  stats = program.memory_analysis()
  free = free_bytes()
  if stats is None or free is None:
    return
  need = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
          + stats.output_size_in_bytes - stats.alias_size_in_bytes)
  if need > free:
    fits = max(1, int(batch * free / need))
    raise ValueError(
        f"{what}: a batch of {batch} needs about {need / 2**30:.1f} GiB, "
        f"{free / 2**30:.1f} GiB are free; pass batch_size={fits} or less")


def compile_count() -> int:
  """Programs compiled by :func:`compiled` so far in this process."""
  return _COMPILES[0]


def clear_cache() -> None:
  _CACHE.clear()


def compile_timed(fn: Callable, *args) -> tuple[Callable, float]:
  """``fn`` jitted and compiled ahead of time for ``args`` (no cache), and
  the seconds that took (tracing and lowering included)."""
  t0 = time.perf_counter()
  program = jax.jit(fn).lower(*args).compile()
  return program, time.perf_counter() - t0


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def chunk(method, carry: Carry, inputs: PyTree, stop: Array, length: int,
          reference: Optional[Array] = None):
  """``length`` iterations of one problem in a ``lax.scan``, then its checkpoint.

  Steps at ``it >= stop`` or of a halted problem leave the state as it is.
  Returns ``(carry, stats, out, candidates)``; ``stats`` has a leading
  axis of ``length``; with ``reference`` (ORACLE) ``out["psnr"]`` holds the
  candidates' PSNR, never used to choose.
  """
  def body(c, _):
    s, it = c
    active = (it < stop) & ~carry.halted
    new, stats = method.step(s, inputs)
    return (tree_where(active, new, s), it + active.astype(it.dtype)), stats

  (state, it), stats = jax.lax.scan(body, (carry.state, carry.it), None,
                                    length=length)
  new, cands, out, halt = method.checkpoint(state, inputs)
  state = tree_where(carry.halted, state, new)
  if reference is not None:
    out = dict(out, psnr=psnr(cands, reference))
  return Carry(state, it, carry.halted | halt), stats, out, cands


VECTORIZE = ("auto", "vmap", "map")


def resolve_vectorize(vectorize: str) -> str:
  """``auto``: ``map`` on CPU (per-problem nets gain nothing from batched
  matmuls there, and a stopped problem costs nothing), ``vmap`` elsewhere."""
  if vectorize not in VECTORIZE:
    raise ValueError(f"vectorize must be one of {VECTORIZE}, got {vectorize!r}")
  if vectorize == "auto":
    return "map" if jax.default_backend() == "cpu" else "vmap"
  return vectorize


def batch_chunk(method, length: int, with_reference: bool,
                vectorize: str = "vmap") -> Callable:
  """:func:`chunk` over a batch: ``(carry, inputs, reference, stop)``.

  ``vmap``: all problems at once (a GPU's way); ``map``: one after the
  other in a ``lax.map`` (same program for each, so the numbers are a
  single run's), a stopped problem only re-scored.
  """
  # jitted, so that its trace is cached: ``frozen`` asks for its output
  # shapes and ``cond`` then calls it, tracing it once for both
  @jax.jit
  def one(c, i, r, stop):
    return chunk(method, c, i, stop, length, r)

  def frozen(c, i, r, stop):   # no steps: what chunk gives a stopped problem
    shapes = jax.eval_shape(one, c, i, r, stop)[1]
    stats = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                   shapes)
    new, cands, out, halt = method.checkpoint(c.state, i)
    if r is not None:
      out = dict(out, psnr=psnr(cands, r))
    return c, stats, out, cands

  def chunk_batch(carry, inputs, reference, stop):
    if vectorize == "vmap":
      return jax.vmap(lambda c, i, r: one(c, i, r, stop),
                      in_axes=(0, 0, 0 if with_reference else None))(
                          carry, inputs, reference)

    def each(args):
      c, i, r = args
      r = reference if not with_reference else r
      done = c.halted | (c.it >= stop)
      return jax.lax.cond(done, frozen, one, c, i, r, stop)

    xs = (carry, inputs, reference if with_reference else None)
    return jax.lax.map(each, xs)

  chunk_batch.__name__ = "chunk"   # the program's name in profiles: jit_chunk
  return chunk_batch


def batch_init(method) -> Callable:
  """``method.init`` ``vmap``-ped: ``(obs, task, key_data) -> (state, inputs)``
  (raw key data, uint32, so that a batch of keys can be sharded)."""
  def init(obs, task, key_data):
    return method.init(obs, task, jax.random.wrap_key_data(key_data))
  return jax.vmap(init)


class History(NamedTuple):
  """Per problem: per-iteration stats and per-checkpoint outputs (lists)."""

  steps: list            # [{name: [arrays]}] per problem
  checkpoints: list      # [{"iteration": [...], name: [...]}] per problem
  snapshots: list        # [{"iteration": [...], "images": [...]}] per problem


def new_history(n: int) -> History:
  return History([{} for _ in range(n)],
                 [{"iteration": []} for _ in range(n)],
                 [{"iteration": [], "images": []} for _ in range(n)])


def run(program: Callable, carry: Carry, inputs: PyTree, stop: int, *,
        reference: Optional[Array] = None, history: History,
        n_real: Optional[int] = None, snapshot_every: int = 0,
        progress: Optional[Callable[[dict], None]] = None,
        describe: Optional[Callable[[dict, dict], dict]] = None,
        total: Optional[int] = None, t_start: Optional[float] = None):
  """Runs the compiled chunk ``program`` until every problem has stopped.

  A problem stops when it reaches ``stop`` iterations or halts by its own
  rule. Appends to ``history`` (problems ``[:n_real]``; the rest is
  padding) and calls ``progress`` after every chunk with ``iteration``
  (the furthest problem), ``total``, ``seconds``, ``its_per_second``,
  ``active`` (problems still running) and what ``describe(stats, out)``
  adds from problem 0. Returns ``(carry, candidates)`` of the last chunk.
  """
  n_real = len(history.steps) if n_real is None else n_real
  stop_arr = jnp.asarray(stop, jnp.int32)
  t_start = time.perf_counter() if t_start is None else t_start
  t_loop = time.perf_counter()
  it0 = host(carry.it)[:n_real].copy()
  cands = None
  while True:
    before = host(carry.it)[:n_real]
    halted = host(carry.halted)[:n_real]
    if not np.any((before < stop) & ~halted):
      break
    carry, stats, out, cands = program(carry, inputs, reference, stop_arr)
    after = host(carry.it)[:n_real]
    stats, out = host((stats, out))
    _record(history, before, after, stats, out, cands, snapshot_every)
    if progress is not None:
      done = int(after.max())
      info = dict(iteration=done, total=stop if total is None else total,
                  seconds=time.perf_counter() - t_start,
                  its_per_second=float((after - it0).max()) /
                  max(time.perf_counter() - t_loop, 1e-9),
                  active=int(np.sum((after < stop) & ~np.asarray(
                      jax.device_get(carry.halted))[:n_real])))
      if describe is not None:
        info.update(describe({k: np.asarray(v)[0] for k, v in stats.items()},
                             {k: np.asarray(v)[0] for k, v in out.items()}))
      progress(info)
  return carry, cands


def _record(history: History, before, after, stats, out, cands,
            snapshot_every: int) -> None:
  snap = None   # the candidates on the host, fetched once if a snapshot is due
  for b in range(len(before)):
    n = int(after[b] - before[b])
    if n == 0:
      continue
    for k, v in stats.items():
      history.steps[b].setdefault(k, []).append(np.asarray(v)[b, :n])
    ck = history.checkpoints[b]
    ck["iteration"].append(int(after[b]))
    for k, v in out.items():
      ck.setdefault(k, []).append(np.asarray(v)[b])
    if snapshot_every and after[b] % snapshot_every == 0:
      history.snapshots[b]["iteration"].append(int(after[b]))
      snap = host(cands) if snap is None else snap
      history.snapshots[b]["images"].append(np.clip(snap[b], 0, 1))


def history_arrays(history: History, b: int) -> dict:
  """Problem ``b``'s history as arrays: per-iteration ``name`` and
  per-checkpoint ``checkpoint_name``."""
  hist = {k: np.concatenate(v) for k, v in history.steps[b].items()}
  hist.update({f"checkpoint_{k}": np.asarray(v)
               for k, v in history.checkpoints[b].items()})
  return hist


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def check_batch(observations, keys, n_tasks: Optional[int] = None) -> int:
  """The batch size; raises ``ValueError`` naming what does not match."""
  shapes = {tuple(np.shape(o)) for o in observations}
  if not shapes:
    raise ValueError("the batch is empty")
  if len(shapes) > 1:
    raise ValueError(f"a batch must hold images of one shape, got "
                     f"{sorted(shapes)}: restore them in separate batches")
  n = len(observations)
  if keys is not None and len(keys) != n:
    raise ValueError(f"got {len(keys)} keys for {n} images: pass one key "
                     f"per image")
  if n_tasks is not None and n_tasks != n:
    raise ValueError(f"got {n_tasks} tasks for {n} images: pass one task, "
                     f"or one per image")
  return n


def stack_tasks(tasks: Sequence, n: int):
  """One task pytree with a leading batch axis on every array field."""
  if not isinstance(tasks, (list, tuple)):
    tasks = [tasks] * n
  structs = {jax.tree_util.tree_structure(t) for t in tasks}
  if len(structs) > 1:
    raise ValueError("the tasks of a batch must be of one class with the "
                     "same settings (only their arrays may differ)")
  return jax.tree_util.tree_map(
      lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *tasks)


def pad_batch(tree: PyTree, multiple: int, size: int = 1
              ) -> tuple[PyTree, int]:
  """Pads every leaf's leading axis to at least ``size`` and then a
  multiple by repeating the last entry; returns the tree and its old length."""
  n = jax.tree_util.tree_leaves(tree)[0].shape[0]
  pad = max(size - n, 0)
  pad += (-(n + pad)) % multiple
  if not pad:
    return tree, n

  def grow(a):   # numpy stays numpy: the signature of an unpadded batch
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.concatenate([a, xp.repeat(a[-1:], pad, axis=0)])

  return jax.tree_util.tree_map(grow, tree), n


def batch_mesh(devices: Optional[Sequence] = None) -> Mesh:
  """A one-axis ``Mesh`` (``"batch"``) over ``devices`` (default: all, every host)."""
  devs = np.asarray(jax.devices() if devices is None else list(devices))
  return Mesh(devs, ("batch",))


def shard(tree: PyTree, mesh: Optional[Mesh]) -> PyTree:
  """Places every leaf's leading axis on ``mesh``'s ``"batch"`` axis
  (each host builds the shards it holds from the whole array)."""
  if mesh is None:
    return tree
  sharding = NamedSharding(mesh, P("batch"))

  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])

  return jax.tree_util.tree_map(put, tree)


def gather(tree: PyTree) -> PyTree:
  """Every leaf whole on every process (a collective under
  ``jax.distributed``: every process calls it at the same point)."""
  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      from jax.experimental import multihost_utils
      a = multihost_utils.process_allgather(a, tiled=True)
    return a
  return jax.tree_util.tree_map(get, tree)


def host(tree: PyTree) -> PyTree:
  """:func:`gather`, then every leaf as a NumPy array."""
  return jax.tree_util.tree_map(np.asarray, jax.device_get(gather(tree)))
