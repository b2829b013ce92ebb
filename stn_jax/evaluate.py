"""Evaluates a trained run without training it:
``python -m stn_jax.evaluate --workdir=DIR [--config=experiments/<file>.py[:variant]]``.

The run's own config (``DIR/config.json``) is used unless ``--config`` gives one; with
``--config``, its ``--config.<field>=<value>`` overrides apply, e.g. another distortion's
test set for a model of the same input size. Prints each set's error and writes them, with
the checkpoint used, to ``DIR/evaluation.json`` (``--out`` elsewhere); ``--pictures=N``
draws what the transformers do to the first N images of the first set
(``DIR/evaluate_<set>_step_<step>.png``).

  python -m stn_jax.evaluate --workdir=runs/rts_st_cnn
  python -m stn_jax.evaluate --workdir=runs/rts_st_cnn --checkpoint=best --sets=test
"""

import importlib.util
import json
import os
import sys

_MISSING = [name for name in ("absl", "ml_collections", "optax", "grain")
            if importlib.util.find_spec(name) is None]
if _MISSING:
  sys.exit(f"error: evaluation needs {', '.join(_MISSING)}, which come with the `train` extra: "
           "pip install -e '.[train]' (from the repository) or pip install 'stn_jax[train]'.")

from absl import app, flags, logging  # noqa: E402 (after the check above)
from ml_collections import config_flags  # noqa: E402

_FLAGS = {}


def _define_flags():
  """Defines the flags when this module runs as the program: imported beside stn_jax.main
  (whose flags share these names), it defines none."""
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (default: the run's config.json).",
      lock_config=True)
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "The trained run's directory.")
  _FLAGS["checkpoint"] = flags.DEFINE_enum(
      "checkpoint", "latest", ["latest", "best"],
      "The newest checkpoint or the one of least validation error.")
  _FLAGS["sets"] = flags.DEFINE_list("sets", None,
                                     "Held-out sets to evaluate (default: all the task's).")
  _FLAGS["pictures"] = flags.DEFINE_integer(
      "pictures", 16, "Images drawn with the transformers' regions (0: no picture).")
  _FLAGS["out"] = flags.DEFINE_string("out", None,
                                      "Where the JSON goes (default: DIR/evaluation.json).")
  flags.mark_flags_as_required(["workdir"])


def run_config(workdir: str):
  """The config a run was trained with, read from its ``config.json``."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{workdir!r} has no config.json: give the workdir of a trained "
                            "run, or --config=experiments/<file>.py[:variant].")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def main(argv):
  from stn_jax import cli  # pylint: disable=import-outside-toplevel
  from stn_jax.train import trainers  # pylint: disable=import-outside-toplevel
  cli.check_positional(argv)
  workdir = _FLAGS["workdir"].value
  with cli.user_errors():
    config = _FLAGS["config"].value if _FLAGS["config"].value is not None else run_config(workdir)
    trainer = trainers.get(trainers.name_for(config))
    if trainer.evaluate is None:
      raise FileNotFoundError(trainer.not_evaluable)
    out = trainer.evaluate(config, workdir, which=_FLAGS["checkpoint"].value,
                           sets=_FLAGS["sets"].value, pictures_of=_FLAGS["pictures"].value)
  for name, r in out["sets"].items():
    print(f"{name} error: {100 * r['error']:.2f}% ({int(r['examples'])} examples), "
          f"loss {r['loss']:.4f}")
  path = _FLAGS["out"].value or os.path.join(workdir, "evaluation.json")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({**out, "config": config.to_dict()}, f, indent=2, sort_keys=True, default=str)
  print(f"checkpoint: {out['checkpoint']} (step {out['step']})")
  if out["picture"]:
    print(f"picture: {out['picture']}")
  print(f"written: {path}")
  logging.flush()


if __name__ == "__main__":
  _define_flags()
  app.run(main)
