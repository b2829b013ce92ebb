"""Runs one config with several seeds and reports the mean and spread of its results.

  python -m stn_jax.seeds --config=experiments/distorted_mnist.py:rts,st_cnn --workdir=runs/rts \\
      --seeds=0,1,2

Seed ``s`` trains in ``WORKDIR/seed_s`` (``config.seed = s``: initialisation,
data order and training distortions; the evaluation sets stay fixed by their
own seeds, so every seed is scored on the same images). Each run resumes on
its own, so an interrupted sweep continues where it stopped. At the end,
``WORKDIR/summary.json`` holds every seed's results and, for each number they
share, the mean, the sample standard deviation, the minimum and the maximum,
as the paper averages several runs.
"""

from __future__ import annotations

import copy
import json
import math
import os

__all__ = ["parse_seeds", "run_seeds", "summarise"]


def summarise(results: dict) -> dict:
  """Mean and spread of every number that all runs report.

  Args:
    results: seed -> that run's ``results.json`` contents.

  Returns:
    ``{'seeds': [...], 'runs': results, 'stats': {name: {'mean', 'std', 'min', 'max'}}}``;
    ``std`` is the sample standard deviation (0 for a single run).

  >>> s = summarise({0: {'test_error': 0.1, 'model': 'cnn'}, 1: {'test_error': 0.3}})
  >>> {k: round(v, 4) for k, v in s['stats']['test_error'].items()}
  {'mean': 0.2, 'std': 0.1414, 'min': 0.1, 'max': 0.3}
  """
  if not results:
    raise ValueError("summarise needs the results of at least one run.")
  runs = list(results.values())
  names = [k for k, v in runs[0].items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)
           and all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                   for r in runs)]
  stats = {}
  for name in sorted(names):
    values = [float(r[name]) for r in runs]
    mean = sum(values) / len(values)
    var = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    stats[name] = {"mean": mean, "std": math.sqrt(var), "min": min(values), "max": max(values)}
  return {"seeds": list(results), "runs": results, "stats": stats}


def parse_seeds(seeds) -> list:
  """The seeds as integers: at least one, each in [0, 2**32), no two the same.

  Args:
    seeds: integers or their text (``--seeds=0,1,2`` gives ``['0', '1', '2']``).

  Raises:
    stn_jax.errors.ConfigError: a seed is not such an integer, none is given, or one repeats.

  >>> parse_seeds(['0', ' 2', 5])
  [0, 2, 5]
  """
  from stn_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  given = ",".join(str(s) for s in seeds)
  out = []
  for s in seeds:
    try:
      value = int(str(s).strip())
    except ValueError:
      raise ConfigError(f"The seed {str(s)!r} (of seeds {given!r}) is not an integer; give "
                        "distinct integers, e.g. --seeds=0,1,2.") from None
    if not 0 <= value < 2**32:
      raise ConfigError(f"The seed {value} (of seeds {given!r}) is outside [0, 2**32), the seeds "
                        "NumPy and grain take; give seeds in that range, e.g. --seeds=0,1,2.")
    out.append(value)
  if not out:
    raise ConfigError("No seed was given; give at least one, e.g. --seeds=0,1,2.")
  repeated = sorted({s for s in out if out.count(s) > 1})
  if repeated:
    raise ConfigError(f"The seeds must be distinct: {', '.join(map(str, repeated))} appears more "
                      f"than once in {given!r}, and each seed trains in its own folder; give each "
                      "seed once.")
  return out


def run_seeds(config, workdir: str, seeds) -> dict:
  """Trains ``config`` once per seed in ``workdir/seed_<s>`` and writes ``summary.json``.

  The seeds, the config and the workdir are checked before the first run starts.
  """
  # Imported here so that `summarise` needs no JAX.
  import jax  # pylint: disable=import-outside-toplevel
  from stn_jax import train  # pylint: disable=import-outside-toplevel
  from stn_jax.train import validate  # pylint: disable=import-outside-toplevel
  seeds = parse_seeds(seeds)
  validate.check_config(config, workdir, jax.device_count())
  results = {}
  for seed in seeds:
    c = copy.deepcopy(config)  # keeps field references, so fields tied to the seed follow it
    with c.unlocked():
      c.seed = seed
    results[seed] = train.train_and_evaluate(c, os.path.join(workdir, f"seed_{seed}"))
  summary = summarise(results)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
  return summary


def _main(argv):
  from absl import flags, logging  # pylint: disable=import-outside-toplevel
  from stn_jax import cli  # pylint: disable=import-outside-toplevel
  from stn_jax.runtime import events  # pylint: disable=import-outside-toplevel
  cli.check_positional(argv)
  events.load_hooks()
  with cli.user_errors():  # one 'error:' line for what the user can fix, as main's
    summary = run_seeds(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.seeds)
  for name in ("validation_error", "test_error"):
    if name in summary["stats"]:
      s = summary["stats"][name]
      logging.info("%s over seeds %s: %.4f +- %.4f (min %.4f, max %.4f)", name,
                   summary["seeds"], s["mean"], s["std"], s["min"], s["max"])


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=ungrouped-imports
  from stn_jax import cli
  # The entry point's flags (--config, --workdir and the multi-process ones) and its
  # parser, which starts JAX's distributed runtime when several processes are given.
  cli.define_run_flags()
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run, each in WORKDIR/seed_<s>.")
  app.run(_main, flags_parser=cli.parse_flags)
