"""What every entry point shares and that defines no flags."""

from __future__ import annotations

import sys


def run_main(main) -> None:
  """``app.run(main)`` with bad input reported as one clear line, exit code 2."""
  from absl import app

  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(wrapped)


def use_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache in ``path`` (empty: leave it off).

  Programs that took at least 0.5 s to compile are kept, so a second run
  of the same shapes loads them instead of compiling again.
  """
  if not path:
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
