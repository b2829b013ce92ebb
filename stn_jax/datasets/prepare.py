"""Prepares SVHN, CUB-200-2011 or MNIST into ArrayRecord files, once.

  python -m stn_jax.datasets.prepare svhn --manual_dir=DIR [--config=64|128] [--data_dir=DIR]
  python -m stn_jax.datasets.prepare cub --manual_dir=DIR [--data_dir=DIR]
  python -m stn_jax.datasets.prepare mnist [--manual_dir=DIR] [--data_dir=DIR]

``--data_dir`` defaults to ``$STN_TFDS_DIR`` and then to ``data/tfds``. See
``data/README.md`` for what each manual directory must hold.
"""

from __future__ import annotations

import argparse
import sys

from stn_jax.datasets import prepared


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m stn_jax.datasets.prepare",
      description="Prepare a dataset into ArrayRecord files (no TensorFlow needed).")
  parser.add_argument("dataset", choices=sorted(prepared.BUILDERS))
  parser.add_argument("--config", default=None,
                      help="builder config, e.g. 64 or 128 for svhn (default: the first).")
  parser.add_argument("--manual_dir", default=None,
                      help="directory holding the official archives.")
  parser.add_argument("--data_dir", default=None,
                      help=f"where prepared datasets live (default ${prepared.ENV_VAR} or "
                      f"{prepared.DEFAULT_DIR}).")
  args = parser.parse_args(argv)
  try:
    out = prepared.prepare(args.dataset, config=args.config, data_dir=args.data_dir,
                           manual_dir=args.manual_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"prepared {args.dataset} in {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
