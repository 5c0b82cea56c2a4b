"""``experiments.fetch_data`` and its manifest, without a network.

Downloads are tested against ``file://`` copies: a temporary source tree
laid out as the public URLs are, and a manifest whose URLs point there.
"""

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from experiments import fetch_data as fd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
MANIFEST = fd.load_manifest()
URL_PREFIX = "https://raw.githubusercontent.com/"


def _sha(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _cmd(*args):
  return subprocess.run([sys.executable, "-m", "experiments.fetch_data", *args],
                        cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _write_manifest(tmp_path, files):
  path = tmp_path / "manifest.json"
  path.write_text(json.dumps(dict(MANIFEST, files=files)))
  return str(path)


def _dirs(tmp_path):
  return {"data": str(tmp_path / "data"), "models": str(tmp_path / "models")}


def _listing(folder):
  return sorted(os.path.relpath(os.path.join(r, f), folder)
                for r, _, fs in os.walk(folder) for f in fs)


# ---------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------

def test_manifest_entries_are_complete():
  paths = [e["path"] for e in MANIFEST["files"]]
  assert len(paths) == len(set(paths))
  for e in MANIFEST["files"]:
    assert e["root"] in ("data", "models"), e
    assert e["group"] in MANIFEST["groups"], e
    assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), e
    if e["url"] is None:
      assert e.get("note"), e            # says how it was made
    else:
      assert e["url"].startswith(URL_PREFIX), e
      # pinned to a commit, so that the checksum cannot drift
      assert re.search(r"/[0-9a-f]{40}/", e["url"]), e
    if "derive" in e:
      assert e["derive"]["rule"] in fd.RULES and e["derive"]["rule"] in MANIFEST["rules"]
      assert re.fullmatch(r"[0-9a-f]{64}", e["derive"]["arrays_sha256"])
  groups = {e["group"] for e in MANIFEST["files"]}
  assert {"dip", "cset5", "bsd20", "cifar10", "resnet20"} <= groups


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "data")),
                    reason=f"no shared data at {SHARED}/data")
def test_manifest_checksums_equal_the_shared_files():
  for e in MANIFEST["files"]:
    path = os.path.join(SHARED, e["root"], *e["path"].split("/"))
    assert os.path.isfile(path), f"{path} is in the manifest, not in {SHARED}"
    assert _sha(path) == e["sha256"], e["path"]
    assert os.path.getsize(path) == e["bytes"], e["path"]
    if "derive" in e:
      assert fd.arrays_sha256(path) == e["derive"]["arrays_sha256"], e["path"]
  # and the other way round: every shared data file is in the manifest
  listed = {(e["root"], e["path"]) for e in MANIFEST["files"]}
  for root in ("data", "models"):
    for rel in _listing(os.path.join(SHARED, root)):
      if not rel.endswith(".md"):
        assert (root, rel.replace(os.sep, "/")) in listed, rel


def test_every_data_file_the_repository_names_is_in_the_manifest():
  pattern = re.compile(r"\b((?:dip|cset5|bsd20|cifar10)/[\w.-]+\.(?:png|jpg|npz)"
                       r"|resnet20_cifar10[\w]*\.npz)\b")
  listed = {e["path"] for e in MANIFEST["files"]}
  named = set()
  for folder in ("experiments", "benchmarks", "colab", "dncf_jax", "tests"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
      for f in files:
        if f.endswith((".py", ".flags", ".ipynb", ".md")) and f != "test_fetch_data.py":
          with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
            named |= set(pattern.findall(fh.read()))
  assert named, "the pattern found nothing"
  missing = sorted(n for n in named if n not in listed)
  assert not missing, f"named in the repository, not in the manifest: {missing}"


def test_only_selects_groups_and_paths_and_rejects_unknown_names():
  assert len(fd.select(MANIFEST, [])) == len(MANIFEST["files"])
  dip = fd.select(MANIFEST, ["dip"])
  assert dip and all(e["group"] == "dip" for e in dip)
  one = fd.select(MANIFEST, ["cset5/bird.png", "cifar10"])
  assert [e["path"] for e in one] == ["cset5/bird.png", "cifar10/cifar10_test_2000.npz"]
  with pytest.raises(ValueError, match="unknown --only"):
    fd.select(MANIFEST, ["nope"])


def test_dry_run_lists_every_file_with_source_and_checksum(tmp_path):
  r = _cmd("--dry_run", f"--data_dir={tmp_path}/data", f"--models_dir={tmp_path}/models")
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  assert lines[0].startswith(f"{len(MANIFEST['files'])} files")
  assert len(lines) == 1 + len(MANIFEST["files"])
  for e, line in zip(MANIFEST["files"], lines[1:]):
    assert f"sha256={e['sha256']}" in line
    assert f"source={e['url'] or 'no public source'}" in line
    assert line.startswith(os.path.join(str(tmp_path), e["root"], e["path"]))
  assert not os.path.exists(tmp_path / "data")       # nothing downloaded


# ---------------------------------------------------------------------------
# Downloads from file:// copies
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "data")),
                    reason=f"no shared data at {SHARED}/data")
def test_fetch_from_file_copies_checks_and_a_second_run_skips(tmp_path):
  wanted = ["dip/kate_mask.png", "dip/vase_mask.png", "cset5/bird.png"]
  entries = []
  for e in fd.select(MANIFEST, wanted):
    src = tmp_path / "src" / e["url"][len(URL_PREFIX):]
    src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(SHARED, "data", e["path"]), src)
    entries.append(dict(e, url=src.as_uri()))
  manifest = _write_manifest(tmp_path, entries)
  args = (f"--manifest={manifest}", f"--data_dir={tmp_path}/data",
          f"--models_dir={tmp_path}/models")
  r = _cmd(*args)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "0 present, 3 fetched" in r.stdout
  for e in entries:
    assert _sha(tmp_path / "data" / e["path"]) == e["sha256"]
  assert _listing(tmp_path / "data") == sorted(wanted)      # no temporary files
  r = _cmd(*args)                                           # second run: nothing to do
  assert r.returncode == 0 and "3 present, 0 fetched" in r.stdout, r.stdout
  r = _cmd(*args, "--only=cset5")
  assert r.returncode == 0 and "1 present, 0 fetched" in r.stdout, r.stdout


def _small_source(tmp_path, name="a.png", content=None):
  """One file under a file:// source tree and its manifest entry."""
  src = tmp_path / "src" / name
  src.parent.mkdir(parents=True, exist_ok=True)
  src.write_bytes(content if content is not None else os.urandom(300_000))
  return dict(path=f"dip/{name}", root="data", group="dip", url=src.as_uri(),
              sha256=_sha(src), bytes=src.stat().st_size)


def test_wrong_checksum_leaves_no_file_and_names_the_file_and_source(tmp_path):
  entry = dict(_small_source(tmp_path), sha256="0" * 64)
  manifest = _write_manifest(tmp_path, [entry])
  r = _cmd(f"--manifest={manifest}", f"--data_dir={tmp_path}/data",
           f"--models_dir={tmp_path}/models")
  assert r.returncode == 1
  errors = [l for l in r.stdout.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, r.stdout
  assert "dip/a.png" in errors[0] and "wrong checksum" in errors[0]
  assert entry["url"] in errors[0]
  assert _listing(tmp_path / "data") == []


def test_a_missing_source_is_one_line_and_leaves_nothing(tmp_path):
  entry = dict(_small_source(tmp_path), url=(tmp_path / "nowhere.png").as_uri())
  out = fd.fetch([entry], _dirs(tmp_path), log=lambda s: None)
  assert len(out["errors"]) == 1 and "dip/a.png" in out["errors"][0]
  assert entry["url"] in out["errors"][0]
  assert _listing(tmp_path / "data") == []


class _Broken:
  """A response that gives some bytes, then fails as a dropped connection does."""

  def __init__(self, exc):
    self.exc, self.calls = exc, 0

  def read(self, n=-1):
    self.calls += 1
    if self.calls > 2:
      raise self.exc
    return b"x" * 1000

  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


@pytest.mark.parametrize("exc", [ConnectionResetError("reset by peer"), KeyboardInterrupt()])
def test_an_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch, exc):
  entry = _small_source(tmp_path)
  dest = tmp_path / "data" / "dip" / "a.png"
  dest.parent.mkdir(parents=True)
  dest.write_bytes(b"stale")                 # a wrong file already there stays as it was
  monkeypatch.setattr(fd, "open_url", lambda url, timeout: _Broken(exc))
  lines = []
  if isinstance(exc, KeyboardInterrupt):
    with pytest.raises(KeyboardInterrupt):
      fd.fetch([entry], _dirs(tmp_path), log=lines.append)
  else:
    out = fd.fetch([entry], _dirs(tmp_path), log=lines.append)
    assert out["errors"] == lines
  assert len(lines) == 1 and "dip/a.png" in lines[0] and entry["url"] in lines[0]
  assert _listing(tmp_path / "data") == ["dip/a.png"]
  assert dest.read_bytes() == b"stale"


def test_a_wrong_file_in_place_is_replaced(tmp_path):
  entry = _small_source(tmp_path)
  dest = tmp_path / "data" / "dip" / "a.png"
  dest.parent.mkdir(parents=True)
  dest.write_bytes(b"truncated")
  out = fd.fetch([entry], _dirs(tmp_path), log=lambda s: None)
  assert out["fetched"] == ["dip/a.png"] and not out["errors"]
  assert _sha(dest) == entry["sha256"]


def test_an_entry_without_source_is_skipped_unless_asked_for(tmp_path):
  entry = dict(path="ref.npz", root="models", group="ref", url=None,
               sha256="1" * 64, note="made by hand")
  out = fd.fetch([entry], _dirs(tmp_path), log=lambda s: None)
  assert out["skipped"] == ["ref.npz"] and not out["errors"]
  out = fd.fetch([entry], _dirs(tmp_path), explicit=frozenset({"ref"}),
                 log=lambda s: None)
  assert len(out["errors"]) == 1 and "no public source" in out["errors"][0]


# ---------------------------------------------------------------------------
# Derived files
# ---------------------------------------------------------------------------

def test_cifar10_rule_takes_the_first_images_of_each_class(tmp_path):
  rng = np.random.default_rng(0)
  classes, per_class = ["cat", "dog"], 2
  expected = []
  for c in classes:
    for i in range(per_class + 1):        # one more than taken
      path = tmp_path / "src" / "test" / c / f"{i:04d}.jpg"
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(path, quality=90)
      if i < per_class:
        expected.append(np.asarray(Image.open(path).convert("RGB")))
  want = tmp_path / "want.npz"
  np.savez_compressed(want, images=np.stack(expected),
                      labels=np.asarray([0, 0, 1, 1], np.int64),
                      classes=np.asarray(classes))
  entry = dict(path="cifar10/sub.npz", root="data", group="cifar10",
               url=(tmp_path / "src").as_uri() + "/test/{class}/{index:04d}.jpg",
               sha256=_sha(want),
               derive=dict(rule="cifar10_jpeg_subset", classes=classes,
                           per_class=per_class, arrays_sha256=fd.arrays_sha256(want)))
  out = fd.fetch([entry], _dirs(tmp_path), log=lambda s: None)
  assert out["fetched"] == ["cifar10/sub.npz"], out
  with np.load(tmp_path / "data" / "cifar10" / "sub.npz") as f:
    np.testing.assert_array_equal(f["images"], np.stack(expected))
    np.testing.assert_array_equal(f["labels"], [0, 0, 1, 1])
    assert list(f["classes"]) == classes
  # same arrays, other bytes (another zlib): accepted by the arrays' checksum
  other = tmp_path / "data" / "cifar10" / "sub.npz"
  with np.load(other) as f:
    arrays = {k: f[k] for k in f.files}
  np.savez(other, **arrays)                  # uncompressed
  assert _sha(other) != entry["sha256"] and fd.verify(str(other), entry)


def _legacy_torch_checkpoint(state: dict) -> bytes:
  """What the legacy ``torch.save`` writes for ``{"state_dict": state}``,
  made with stand-in ``torch`` classes (no PyTorch needed)."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  class FloatStorage:
    pass
  FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
  torch.FloatStorage = FloatStorage

  def _rebuild_tensor_v2(*a):
    raise AssertionError("never called when writing")
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch._utils = utils

  class Tensor:
    def __init__(self, key, a):
      self.key, self.a = key, a

    def __reduce__(self):
      strides = tuple(s // self.a.itemsize for s in self.a.strides)
      return (_rebuild_tensor_v2, (("storage", self.key), 0, self.a.shape,
                                   strides, False, {}))

  class P(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "storage":
        return ("storage", FloatStorage, obj[1], "cpu", int(state[obj[1]].size), None)
      return None

  saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
  sys.modules.update({"torch": torch, "torch._utils": utils})
  try:
    buf = io.BytesIO()
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   {"protocol_version": 1001, "little_endian": True}):
      pickle.dump(header, buf, protocol=2)
    obj = {"best_prec1": 91.7,
           "state_dict": {"module." + k: Tensor(k, v) for k, v in state.items()}}
    P(buf, protocol=2).dump(obj)
    pickle.dump(list(state), buf, protocol=2)
    for k, v in state.items():
      buf.write(np.int64(v.size).tobytes())
      buf.write(np.ascontiguousarray(v, "<f4").tobytes())
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
  return buf.getvalue()


def test_torch_rule_converts_a_legacy_checkpoint_without_pytorch(tmp_path):
  rng = np.random.default_rng(1)
  state = {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
           "bn1.running_var": rng.random(4).astype(np.float32),
           "linear.weight": rng.standard_normal((10, 4)).astype(np.float32)}
  data = _legacy_torch_checkpoint(state)
  assert fd.read_torch_state_dict(data).keys() == state.keys()
  src = tmp_path / "src" / "w.th"
  src.parent.mkdir(parents=True)
  src.write_bytes(data)
  want = tmp_path / "want.npz"
  np.savez_compressed(want, **state)
  entry = dict(path="w.npz", root="models", group="resnet20", url=src.as_uri(),
               sha256=_sha(want),
               derive=dict(rule="torch_state_dict_to_npz",
                           source_sha256=hashlib.sha256(data).hexdigest(),
                           arrays_sha256=fd.arrays_sha256(want)))
  out = fd.fetch([entry], _dirs(tmp_path), log=lambda s: None)
  assert out["fetched"] == ["w.npz"], out
  with np.load(tmp_path / "models" / "w.npz") as f:
    assert list(f.files) == list(state)
    for k, v in state.items():
      np.testing.assert_array_equal(f[k], v)
  # a checkpoint with another checksum is refused, and nothing is written
  bad = dict(entry, path="w2.npz", derive=dict(entry["derive"], source_sha256="2" * 64))
  out = fd.fetch([bad], _dirs(tmp_path), log=lambda s: None)
  assert len(out["errors"]) == 1 and "w2.npz" in out["errors"][0]
  assert entry["url"] in out["errors"][0]
  assert _listing(tmp_path / "models") == ["w.npz"]


def test_a_pickle_with_other_classes_is_refused():
  class Evil:
    def __reduce__(self):
      return (os.system, ("true",))
  buf = io.BytesIO()
  pickle.dump(0x1950a86a20f9469cfc6c, buf, protocol=2)
  pickle.dump(1001, buf, protocol=2)
  pickle.dump({}, buf, protocol=2)
  pickle.dump({"state_dict": Evil()}, buf, protocol=2)
  with pytest.raises(pickle.UnpicklingError, match="unexpected class"):
    fd.read_torch_state_dict(buf.getvalue())


# ---------------------------------------------------------------------------
# Where the data is looked for
# ---------------------------------------------------------------------------

def test_data_folder_resolution(monkeypatch, tmp_path):
  from dncf_jax import io as dio
  monkeypatch.setenv("DNCF_DATA", str(tmp_path / "d"))
  monkeypatch.setenv("DNCF_MODELS", str(tmp_path / "m"))
  assert dio.default_data_dir() == str(tmp_path / "d")
  assert dio.default_models_dir() == str(tmp_path / "m")
  assert dio.data_dir(str(tmp_path / "flag")) == str(tmp_path / "flag")
  assert dio.data_dir(None) == str(tmp_path / "d")
  monkeypatch.delenv("DNCF_DATA")
  monkeypatch.delenv("DNCF_MODELS")
  shared = os.path.join(SHARED, "data")
  cache = os.path.expanduser(os.path.join("~", ".cache", "dncf_jax", "data"))
  assert dio.default_data_dir() == (shared if os.path.isdir(shared) else cache)
  monkeypatch.setattr(os.path, "isdir", lambda p: False)   # no ../shared
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert dio.default_data_dir() == str(tmp_path / "home" / ".cache" / "dncf_jax" / "data")
  assert dio.default_models_dir() == str(tmp_path / "home" / ".cache" / "dncf_jax" / "models")
