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
