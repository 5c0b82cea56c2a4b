"""Downloads the data and model files: ``python -m experiments.fetch_data``.

Every file the flagfiles, notebooks, benchmarks and tests read is listed in
``dncf_jax/data_manifest.json`` with its public source and SHA-256. For
each one selected (``--only``: groups such as ``dip``, ``cset5``,
``bsd20``, ``cifar10``, ``resnet20``, or paths such as ``dip/kate.png``):

- a file already there with the right checksum is skipped;
- otherwise it is downloaded (or, for a derived file, built from its
  source by its rule) into a temporary file in the target folder, checked,
  and only then renamed into place; a wrong checksum or an interrupted
  download leaves no partial file and prints one line naming the file and
  its source.

Folders: data files go to ``--data_dir``, model files to ``--models_dir``;
unset, they are ``dncf_jax.io.default_data_dir()`` and
``default_models_dir()`` (``$DNCF_DATA`` / ``$DNCF_MODELS``, else
``../shared/{data,models}`` beside the repository when present, else
``~/.cache/dncf_jax/{data,models}``), which is where the commands look.
``--dry_run`` lists every selected file with its target, source and
checksum, and downloads nothing. Exit status 1 when a file could not be had.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import io
import json
import os
import pickle
import struct
import sys
import tempfile
import urllib.request
from typing import Callable, Optional

from absl import app, flags

FLAGS = flags.FLAGS
# allow_override: tests import this module beside benchmarks that define
# flags of the same names in one process.
flags.DEFINE_list("only", [], "Groups or paths to fetch (default: all), e.g. "
                  "--only=dip,cifar10,resnet20 or --only=dip/kate.png.", allow_override=True)
flags.DEFINE_string("data_dir", None, "Where data files go (default: "
                    "$DNCF_DATA, ../shared/data when present, else "
                    "~/.cache/dncf_jax/data).", allow_override=True)
flags.DEFINE_string("models_dir", None, "Where model files go (default: "
                    "$DNCF_MODELS, ../shared/models when present, else "
                    "~/.cache/dncf_jax/models).", allow_override=True)
flags.DEFINE_boolean("dry_run", False, "List the selected files with target, "
                     "source and SHA-256; download nothing.", allow_override=True)
flags.DEFINE_string("manifest", None, "A manifest to use instead of "
                    "dncf_jax/data_manifest.json (tests, mirrors).", allow_override=True)
flags.DEFINE_float("timeout", 60.0, "Seconds to wait for a server.", allow_override=True)
flags.DEFINE_integer("jobs", 8, "Parallel downloads of a derived file's parts.",
                     allow_override=True)


CHUNK = 1 << 16


class FetchError(Exception):
  """A file that could not be had; the message names it and its source."""


def manifest_path() -> str:
  """``data_manifest.json`` of the ``dncf_jax`` package (found without importing it)."""
  spec = importlib.util.find_spec("dncf_jax")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the dncf_jax package is not installed")
  return os.path.join(list(spec.submodule_search_locations)[0],
                      "data_manifest.json")


def load_manifest(path: Optional[str] = None) -> dict:
  with open(path or manifest_path()) as f:
    return json.load(f)


def select(manifest: dict, only: list[str]) -> list[dict]:
  """The entries named by ``only`` (groups or paths; empty: all)."""
  files = manifest["files"]
  if not only:
    return list(files)
  names = {e["group"] for e in files} | {e["path"] for e in files}
  bad = [o for o in only if o not in names]
  if bad:
    raise ValueError(f"unknown --only {bad}; groups: "
                     f"{sorted({e['group'] for e in files})}, or a path such "
                     f"as {files[0]['path']}")
  return [e for e in files if e["group"] in only or e["path"] in only]


def target(entry: dict, dirs: dict[str, str]) -> str:
  return os.path.join(dirs[entry["root"]], *entry["path"].split("/"))


def source(entry: dict) -> str:
  return entry.get("url") or "no public source"


# ---------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------

def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(CHUNK), b""):
      h.update(block)
  return h.hexdigest()


def arrays_sha256(path: str) -> str:
  """SHA-256 over an npz's arrays (names in sorted order, dtype, shape, bytes)."""
  import numpy as np
  h = hashlib.sha256()
  with np.load(path) as f:
    for k in sorted(f.files):
      a = np.ascontiguousarray(f[k])
      h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
      h.update(a.tobytes())
  return h.hexdigest()


def verify(path: str, entry: dict) -> bool:
  """``path`` holds ``entry``'s file: its SHA-256, or for a derived npz the
  same arrays (another zlib may compress them to other bytes)."""
  if not os.path.isfile(path):
    return False
  if file_sha256(path) == entry["sha256"]:
    return True
  want = entry.get("derive", {}).get("arrays_sha256")
  if want and path.endswith(".npz"):
    try:
      return arrays_sha256(path) == want
    except Exception:  # not an npz at all
      return False
  return False


# ---------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------

def open_url(url: str, timeout: float):
  """A readable response for ``url`` (``https://``, ``file://``...)."""
  req = urllib.request.Request(url, headers={"User-Agent": "dncf-jax-fetch"})
  return urllib.request.urlopen(req, timeout=timeout)


def read_url(url: str, timeout: float) -> bytes:
  with open_url(url, timeout) as r:
    return r.read()


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _write_atomic(path: str, write: Callable, check: Callable[[str], None]) -> None:
  """``write(f)`` into a temporary file beside ``path``, ``check(tmp)``, then
  rename it to ``path``; on any error or interruption the temporary file is
  removed and ``path`` is left as it was."""
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                             suffix=".part")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    check(tmp)
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 -> what open() gives
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _check(entry: dict) -> Callable[[str], None]:
  def check(tmp: str) -> None:
    if not verify(tmp, entry):
      raise FetchError(f"{entry['path']}: wrong checksum (got sha256 "
                       f"{file_sha256(tmp)[:16]}..., want "
                       f"{entry['sha256'][:16]}...) from {source(entry)}")
  return check


def download(entry: dict, path: str, timeout: float) -> None:
  url = entry["url"]

  def write(f):
    with open_url(url, timeout) as r:
      for block in iter(lambda: r.read(CHUNK), b""):
        f.write(block)

  _write_atomic(path, write, _check(entry))


# ---------------------------------------------------------------------------
# Derived files
# ---------------------------------------------------------------------------

def derive_cifar10_jpeg_subset(entry: dict, timeout: float, jobs: int) -> bytes:
  """The rule ``cifar10_jpeg_subset`` of the manifest: the npz's bytes."""
  import numpy as np
  from PIL import Image
  d = entry["derive"]
  classes, n = d["classes"], int(d["per_class"])
  urls = [entry["url"].format(**{"class": c, "index": i})
          for c in classes for i in range(n)]
  with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
    raw = list(pool.map(lambda u: read_url(u, timeout), urls))
  images = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                     for b in raw]).astype(np.uint8)
  labels = np.repeat(np.arange(len(classes), dtype=np.int64), n)
  buf = io.BytesIO()
  np.savez_compressed(buf, images=images, labels=labels,
                      classes=np.asarray(classes))
  return buf.getvalue()


_TORCH_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8",
                 "HalfStorage": "<f2", "LongStorage": "<i8",
                 "IntStorage": "<i4", "ByteStorage": "u1"}


class _StorageType:
  def __init__(self, name: str):
    self.name = name


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return ("tensor", storage, offset, tuple(size), tuple(stride))


class _LegacyTorchUnpickler(pickle.Unpickler):
  """Reads the legacy ``torch.save`` format without PyTorch; only the
  classes a state dict needs are allowed."""

  def __init__(self, f):
    super().__init__(f)
    self.storages: dict[str, tuple[str, int]] = {}

  def find_class(self, module, name):
    import collections
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2",
                                             "_rebuild_tensor"):
      return _rebuild_tensor
    if module == "torch" and name in _TORCH_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f"unexpected class {module}.{name}")

  def persistent_load(self, pid):
    _, storage_type, key, _, size, _ = pid
    self.storages[key] = (storage_type.name, int(size))
    return key


def read_torch_state_dict(data: bytes) -> dict:
  """The ``state_dict`` of a legacy-format PyTorch checkpoint as numpy arrays."""
  import numpy as np
  f = io.BytesIO(data)
  u = _LegacyTorchUnpickler(f)
  if u.load() != 0x1950a86a20f9469cfc6c:   # torch's legacy magic number
    raise ValueError("not a legacy torch.save file")
  u.load()                                 # protocol version
  u.load()                                 # system info
  obj = u.load()
  keys = pickle.Unpickler(f).load()
  buffers = {}
  for key in keys:
    count, = struct.unpack("<q", f.read(8))
    dtype = np.dtype(_TORCH_DTYPES[u.storages[key][0]])
    buffers[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
  state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
  out = {}
  for name, (_, key, offset, size, stride) in state.items():
    a = buffers[key]
    arr = np.lib.stride_tricks.as_strided(
        a[offset:], size, [s * a.itemsize for s in stride]).copy()
    out[name.removeprefix("module.")] = arr
  return out


def derive_torch_state_dict_to_npz(entry: dict, timeout: float, jobs: int) -> bytes:
  """The rule ``torch_state_dict_to_npz`` of the manifest: the npz's bytes."""
  import numpy as np
  data = read_url(entry["url"], timeout)
  want = entry["derive"].get("source_sha256")
  if want and hashlib.sha256(data).hexdigest() != want:
    raise FetchError(f"{entry['path']}: the checkpoint has the wrong checksum "
                     f"(want sha256 {want[:16]}...) from {entry['url']}")
  buf = io.BytesIO()
  np.savez_compressed(buf, **read_torch_state_dict(data))
  return buf.getvalue()


RULES = {"cifar10_jpeg_subset": derive_cifar10_jpeg_subset,
         "torch_state_dict_to_npz": derive_torch_state_dict_to_npz}


def derive(entry: dict, path: str, timeout: float, jobs: int) -> None:
  rule = entry["derive"]["rule"]
  if rule not in RULES:
    raise FetchError(f"{entry['path']}: unknown rule {rule!r} in the manifest")
  data = RULES[rule](entry, timeout, jobs)
  _write_atomic(path, lambda f: f.write(data), _check(entry))


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------

def fetch(entries: list[dict], dirs: dict[str, str], timeout: float = 60.0,
          jobs: int = 8, explicit: frozenset = frozenset(),
          log: Callable[[str], None] = print) -> dict[str, list[str]]:
  """Fetches ``entries``; returns the paths by outcome: ``present``,
  ``fetched``, ``skipped`` (no public source) and ``errors`` (one line each).

  An entry without a public source is reported, and counts as an error
  only when it is missing and was named in ``explicit`` (group or path).
  An interruption (Ctrl-C) prints its line and is raised again.
  """
  out: dict[str, list[str]] = {"present": [], "fetched": [], "skipped": [],
                               "errors": []}
  for e in entries:
    path = target(e, dirs)
    if verify(path, e):
      out["present"].append(e["path"])
      log(f"ok       {e['path']} (present: {path})")
      continue
    if not e.get("url"):
      line = (f"{e['path']}: no public source; "
              f"{'wrong checksum at' if os.path.exists(path) else 'not at'} "
              f"{path} ({e.get('note') or 'see the manifest'})")
      if e["group"] in explicit or e["path"] in explicit:
        out["errors"].append(f"error: {line}")
        log(out["errors"][-1])
      else:
        out["skipped"].append(e["path"])
        log(f"skipped  {line}")
      continue
    try:
      if "derive" in e:
        derive(e, path, timeout, jobs)
      else:
        download(e, path, timeout)
    except FetchError as err:
      out["errors"].append(f"error: {err}")
    except KeyboardInterrupt:
      log(f"error: {e['path']}: interrupted, nothing written "
          f"(source: {source(e)})")
      raise
    except Exception as err:  # network, HTTP, decoding: one line per file
      out["errors"].append(f"error: {e['path']}: {type(err).__name__}: "
                           f"{err} (source: {source(e)})")
    else:
      out["fetched"].append(e["path"])
      log(f"fetched  {e['path']} -> {path}")
      continue
    log(out["errors"][-1])
  return out


def describe(entries: list[dict], dirs: dict[str, str]) -> list[str]:
  """One line per entry: target, SHA-256, source (and rule of a derived file)."""
  lines = []
  for e in entries:
    how = f" (derived: {e['derive']['rule']})" if "derive" in e else ""
    lines.append(f"{target(e, dirs)}  sha256={e['sha256']}  "
                 f"source={source(e)}{how}")
  return lines


def default_dirs(data_dir: Optional[str], models_dir: Optional[str]) -> dict:
  if data_dir and models_dir:
    return {"data": os.path.abspath(data_dir), "models": os.path.abspath(models_dir)}
  from dncf_jax import io as dio
  return {"data": dio.data_dir(data_dir), "models": dio.models_dir(models_dir)}


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  manifest = load_manifest(FLAGS.manifest)
  entries = select(manifest, FLAGS.only)
  dirs = default_dirs(FLAGS.data_dir, FLAGS.models_dir)
  if FLAGS.dry_run:
    print(f"{len(entries)} files; data -> {dirs['data']}, models -> {dirs['models']}")
    for line in describe(entries, dirs):
      print(line)
    return
  out = fetch(entries, dirs, FLAGS.timeout, FLAGS.jobs,
              explicit=frozenset(FLAGS.only))
  print(f"{len(out['present'])} present, {len(out['fetched'])} fetched, "
        f"{len(out['skipped'])} skipped (no public source), "
        f"{len(out['errors'])} failed")
  if out["errors"]:
    sys.exit(1)


def run() -> None:
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      sys.exit(130)
  app.run(wrapped)


if __name__ == "__main__":
  run()
