"""The paper's MNIST tables on real MNIST digits (issues 6 and 17): trains every run of
Table 1 (R, RTS, P, E x eight models), the TC line and the supplement's MNIST addition
table, then writes ``docs/results.md``, ``docs/results/*.json`` and the pictures.

  python docs/generate/make_results.py run    # train what is missing (resumes), then write
  python docs/generate/make_results.py write  # only rewrite the docs from finished runs
  python docs/generate/make_results.py gap    # after run: the FCN/ST-FCN runs that measure the gap

``run --only r,p`` trains the runs of those columns only (r, rts, p, e, tc, add).

Every run of a table has the same budget: its experiment's ``results`` variant.
Table 1 and TC train 3000 steps of 64, the learning rate 0.01 divided by ten at 40%
and at 80% of the steps (the paper divides its 150k at each third; why ours differs
is in docs/paper_notes.md, "First results", and docs/research/lab_notes.md); the addition
table has a longer budget of its own (experiments/mnist_addition.py). ``--steps``
and ``--batch`` replace every table's budget (quick checks). Seed 0 of every
run trains first; then seeds 1 and 2 of the runs :func:`seed_plan` names. Runs
live in ``--runs`` (default ``runs/first_results``, git-ignored); a run stopped
midway resumes from its checkpoint. A result committed in ``docs/results/`` counts
as done: it is kept and not trained again. MNIST comes from ``$STN_MNIST_DIR``
(see data/README.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import textwrap
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent  # docs/generate/, beside make_coloc.py
DOCS = HERE.parent  # where results.md and results/ go
REPO = DOCS.parent

# A run is (column, model, transform): the column is a distortion of distorted_mnist.py, or
# "add" for the MNIST addition (mnist_addition.py); transform None is the model's default
# (affine, and TPS for the addition's transformers).
COLUMNS = ("r", "rts", "p", "e")
TABLE1_MODELS = [("fcn", None), ("cnn", None), ("st_fcn", None), ("st_fcn", "projective"),
                 ("st_fcn", "tps"), ("st_cnn", None), ("st_cnn", "projective"),
                 ("st_cnn", "tps")]
TC_MODELS = [("fcn", None), ("cnn", None), ("st_fcn", None), ("st_cnn", None)]
ADDITION_MODELS = [("fcn", None), ("cnn", None), ("st_fcn", None), ("2xst_fcn", None)]
TABLES = {
    "Table 1: distorted MNIST": [(d, m, t) for d in COLUMNS for m, t in TABLE1_MODELS],
    "Translated and cluttered MNIST (TC)": [("tc", m, t) for m, t in TC_MODELS],
    "Supplementary Table 1: MNIST addition": [("add", m, t) for m, t in ADDITION_MODELS],
}
RUNS = [run for runs in TABLES.values() for run in runs]
# % test error from ../shared/paper/paper_results.md.
_PAPER_TABLE1 = {  # model row: R, RTS, P, E
    ("fcn", None): (2.1, 5.2, 3.1, 3.2), ("cnn", None): (1.2, 0.8, 1.5, 1.4),
    ("st_fcn", None): (1.2, 0.8, 1.5, 2.7), ("st_fcn", "projective"): (1.3, 0.9, 1.4, 2.6),
    ("st_fcn", "tps"): (1.1, 0.8, 1.4, 2.4), ("st_cnn", None): (0.7, 0.5, 0.8, 1.2),
    ("st_cnn", "projective"): (0.8, 0.6, 0.8, 1.3), ("st_cnn", "tps"): (0.7, 0.5, 0.8, 1.1)}
PAPER = {(d, m, t): row[i] for (m, t), row in _PAPER_TABLE1.items()
         for i, d in enumerate(COLUMNS)}
PAPER.update({("tc", "fcn", None): 13.2, ("tc", "cnn", None): 3.5,
              ("tc", "st_fcn", None): 2.0, ("tc", "st_cnn", None): 1.7,
              ("add", "fcn", None): 47.7, ("add", "cnn", None): 14.7,
              ("add", "st_fcn", None): 18.5, ("add", "2xst_fcn", None): 5.8})
# What the committed runs' wall times include besides the run itself.
RUN_NOTES = {
    ("tc", "cnn", None): "includes about 17 minutes in which a pilot run (TC ST-CNN, "
                         "localisation at 0.1x) shared the 2 cores; trained at 77 images/s "
                         "(docs/research/lab_notes.md), 219 since issue 15 (docs/performance.md).",
    ("tc", "st_cnn", None): "trained beside its seed-2 run, the two sharing the 2 cores "
                            "throughout; alone, seed 1 took 9.5 minutes.",
    ("p", "st_fcn", "tps"): "shared the 2 cores with a 20-second check of the P distortion.",
    ("e", "st_fcn", None): "shared the 2 cores for 30 of its 41 seconds with a pilot FCN run "
                           "(the other reading of P, docs/research/lab_notes.md).",
    ("e", "st_fcn", "projective"): "shared the 2 cores with a 12-second smoke run.",
    ("r", "st_cnn", None): "stopped after 669 steps and resumed; its time adds both parts "
                           "(the first, 43 s, read from its files' times).",
    ("rts", "cnn", None): "trained at 193 images/s (docs/research/lab_notes.md); since issue 15's "
                          "convolution gradients the step runs 451 images/s "
                          "(docs/performance.md).",
}
_SHARED = ("shared the 2 cores with co-localisation measurements (issue 18) for much of "
           "its time, so it took longer than it would alone.")
RUN_NOTES.update({("add", m, None): _SHARED for m in ("fcn", "cnn", "st_fcn", "2xst_fcn")})
# What a table's reader must know that its cells do not say. A table with a note gets no
# verdict on its ST models: the note says why its cells cannot give one.
TABLE_NOTES = {}
# Localisation-net learning-rate multipliers chosen on the validation split (the paper gives
# none for MNIST; every other ST run trains its localiser at the base rate): the config's
# variant. At the full rate the TC ST-CNN's validation error rose before the first decay at
# every seed; why 0.3 is in docs/paper_notes.md, "First results", and docs/research/lab_notes.md.
LOCALIZATION_LR = {("tc", "st_cnn", None): "loc0.3"}
NAMES = {"fcn": "FCN", "cnn": "CNN", "st_fcn": "ST-FCN", "st_cnn": "ST-CNN",
         "2xst_fcn": "2xST-FCN"}
TRANSFORMS = {None: "Aff", "projective": "Proj", "tps": "TPS"}
COLUMN_NAMES = {"r": "R", "rts": "RTS", "p": "P", "e": "E", "tc": "TC", "add": "addition"}
FCN_FAMILY = ("fcn", "st_fcn", "2xst_fcn")
EXTRA_SEEDS = (1, 2)


def run_name(run) -> str:
  return "_".join(p for p in run if p)


def label(run) -> str:
  column, model, transform = run
  name = NAMES[model]
  if model.startswith(("st_", "2xst_")):
    name += " " + (TRANSFORMS[transform] if column != "add" else
                   TRANSFORMS[transform or "tps"])
  return name


def base_of(run):
  """The model an ST run is compared with: the FCN for the FCN-based ones, else the CNN."""
  column, model, _ = run
  if model in ("st_fcn", "2xst_fcn"):
    return (column, "fcn", None)
  if model == "st_cnn":
    return (column, "cnn", None)
  return None


def experiment_file(run) -> str:
  return "experiments/" + ("mnist_addition.py" if run[0] == "add" else "distorted_mnist.py")


def _experiment(run):
  path = REPO / experiment_file(run)
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def variant(run) -> str:
  """The config variant of ``run`` on this page: ``<experiment_file(run)>:<variant>``
  reproduces it."""
  column, model, transform = run
  loc = LOCALIZATION_LR.get(tuple(run))
  parts = ([] if column == "add" else [column]) + [model] + ([transform] if transform else [])
  return ",".join(parts + ["results"] + ([loc] if loc else []))


def command(run, seed=0) -> str:
  return (f"python -m stn_jax.main --config={experiment_file(run)}:{variant(run)} "
          f"--workdir=runs/{run_name(run)}" + (f" --config.seed={seed}" if seed else ""))


def _common():
  """``experiments/common.py``, where the results budget is."""
  from stn_jax.train.config import sibling  # pylint: disable=import-outside-toplevel
  return sibling(str(REPO / "experiments" / "distorted_mnist.py"), "common")


def make_config(run, steps=None, batch=None, num_eval=None, seed: int = 0):
  """The config of ``run`` at ``seed``: its experiment's ``results`` variant, whose budget
  ``steps`` and ``batch`` (when given) replace, with the schedule of ``results_budget``."""
  c = _experiment(run).get_config(variant(run))
  with c.unlocked():
    if steps is not None or batch is not None:
      _common().results_budget(c, steps or c.num_steps, batch or c.batch_size)
    c.data.num_eval = num_eval
    c.seed = seed
  return c


# ------------------------------------------------------------- where results are


def workdir_of(runs_dir: pathlib.Path, run, seed=0) -> pathlib.Path:
  return runs_dir / run_name(run) if seed == 0 else (
      runs_dir / "seeds" / f"{run_name(run)}_seed{seed}")


def committed_path(docs: pathlib.Path, run, seed=0) -> pathlib.Path:
  return docs / "results" / (f"{run_name(run)}.json" if seed == 0 else
                             f"seeds/{run_name(run)}_seed{seed}.json")


def _validation_curve(workdir: pathlib.Path):
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  points = {}
  for line in path.read_text().splitlines():
    r = json.loads(line)
    if r.get("split") == "validation":
      points[r["step"]] = r["error"]
  return sorted(points.items())


def load_result(runs_dir, docs, run, seed=0):
  """The result of ``run`` at ``seed``: its workdir's ``results.json`` (with its wall time
  and validation curve), else the one committed in ``docs/results/``; None if neither."""
  workdir = workdir_of(runs_dir, run, seed)
  if (workdir / "results.json").exists():
    r = json.loads((workdir / "results.json").read_text())
    wall = workdir / "wall_seconds.json"
    r["wall_seconds_total"] = (json.loads(wall.read_text())["total"] if wall.exists()
                               else r["wall_seconds_this_session"])
    curve = _validation_curve(workdir)
    if curve:
      r["validation_curve"] = curve
    return r
  path = committed_path(docs, run, seed)
  return json.loads(path.read_text()) if path.exists() else None


def find_results(runs_dir, docs):
  """run -> {seed: result} for every finished run and seed."""
  found = {}
  for run in RUNS:
    for seed in (0,) + EXTRA_SEEDS:
      r = load_result(runs_dir, docs, run, seed)
      if r is not None:
        found.setdefault(run, {})[seed] = r
  return found


# ------------------------------------------------------------------- training


def _train_unless_done(config, workdir: pathlib.Path, committed: pathlib.Path, what: str) -> bool:
  """Trains ``config`` in ``workdir`` (resuming), unless it already finished there or its
  result is committed at ``committed``.

  A workdir whose checkpoints are of a run with other settings (the trainer's own
  check, ``check_workdir``) stops the sweep: such a run is neither taken as done nor
  resumed. Returns whether it trained.
  """
  from stn_jax import errors, train  # pylint: disable=import-outside-toplevel
  from stn_jax.train import config as config_lib  # pylint: disable=import-outside-toplevel
  try:
    config_lib.check_workdir(config, str(workdir))
  except errors.ConfigError as e:
    raise SystemExit(f"{e} (Or pass another --runs.)") from None
  for path in (workdir / "results.json", committed):
    if path.exists():
      other = _other_settings(json.loads(path.read_text())["config"], config)
      if other:
        raise SystemExit(f"{path} holds a run with other settings: {'; '.join(other)}. "
                         "Move it (and its run directory) away to train this one.")
      print(f"{workdir.name}: done")
      return False
  print(f"{workdir.name}: training ({what})", flush=True)
  wall = workdir / "wall_seconds.json"
  before = json.loads(wall.read_text())["total"] if wall.exists() else 0.0
  start = time.time()
  try:
    train.train_and_evaluate(config, str(workdir))
  except errors.RunStopped as e:  # SIGINT/SIGTERM: its checkpoint is saved
    raise SystemExit(f"{e} Run make_results.py again to go on.") from None
  finally:  # a stopped run's time counts too: it resumes from there
    if workdir.is_dir():
      wall.write_text(json.dumps({"total": before + time.time() - start}))
  return True


def _other_settings(found: dict, config) -> list:
  """How the config of a finished run (``found``, from its results) differs from
  ``config`` in what fixes its trajectory, its length included."""
  from stn_jax.train import config as config_lib  # pylint: disable=import-outside-toplevel
  there = {**config_lib.run_identity(found), "num_steps": found["num_steps"]}
  here = {**config_lib.run_identity(config), "num_steps": config.num_steps}
  return [f"{k}: {there[k]!r} there, {here[k]!r} here"
          for k in sorted(there.keys() & here.keys()) if there[k] != here[k]]


# Relative cost of a step, for training the cheapest runs first (so a sweep cut short has
# the most runs finished): the model's, times the input's area.
_MODEL_COST = {"fcn": 1, "st_fcn": 2, "2xst_fcn": 3, "st_cnn": 15, "cnn": 30}
_AREA = {"r": 28 * 28, "p": 28 * 28, "e": 28 * 28, "rts": 42 * 42, "add": 2 * 42 * 42,
         "tc": 60 * 60}


def _cost(run):
  return _MODEL_COST[run[1]] * _AREA[run[0]]


def seed_spread(errors) -> float:
  return max(errors) - min(errors)


def seed_plan(found) -> list:
  """The runs that also train seeds 1 and 2, from the results so far (``find_results``).

  The FCN-based models (FCN, ST-FCN, 2xST-FCN) are cheap: always three seeds, as the paper
  averages. A CNN-based pair (an ST-CNN and the CNN of its column) gets three seeds when
  the two differ by less than twice the seed spread (largest minus smallest test error)
  measured on the CNN-based runs that already have three seeds; every pair does while
  none has.
  """
  plan = {run for run in RUNS if run[1] in FCN_FAMILY}
  spreads = [seed_spread([r["test_error"] for r in seeds.values()])
             for run, seeds in found.items() if run[1] not in FCN_FAMILY and len(seeds) >= 3]
  spread = max(spreads) if spreads else None
  for run in RUNS:
    base = base_of(run)
    if run[1] != "st_cnn" or run not in found or base not in found:
      continue
    diff = abs(_mean(found[run]) - _mean(found[base]))
    if spread is None or diff < 2 * spread:
      plan.update((run, base))
  return sorted(plan, key=_cost)


def _mean(seeds, key="test_error"):
  return float(np.mean([r[key] for r in seeds.values()]))


def _budget(c) -> str:
  return f"{c.num_steps} steps of {c.batch_size}"


def train_all(runs_dir: pathlib.Path, docs: pathlib.Path, steps=None, batch=None,
              num_eval=None, only=None):
  chosen = [run for run in RUNS if only is None or run[0] in only]
  for run in sorted(chosen, key=_cost):
    c = make_config(run, steps, batch, num_eval)
    _train_unless_done(c, workdir_of(runs_dir, run), committed_path(docs, run), _budget(c))
  trained = True
  while trained:  # a new result can widen the spread and add pairs to the plan
    trained = False
    for run in seed_plan(find_results(runs_dir, docs)):
      if run not in chosen:
        continue
      for seed in EXTRA_SEEDS:
        c = make_config(run, steps, batch, num_eval, seed)
        trained |= _train_unless_done(c, workdir_of(runs_dir, run, seed),
                                      committed_path(docs, run, seed),
                                      f"{_budget(c)}, seed {seed}")


# ------------------------------------------------- measuring the gap to the paper
# The paper trained on 60k digits for 150k steps of 256; we train on fewer digits for far
# fewer steps. The FCN and ST-FCN runs are cheap, so these variants measure how much each
# factor moves the error: fewer digits at the same budget, and more steps on the same digits.
GAP_MODELS = [(d, m, None) for d in ("rts", "tc") for m in ("fcn", "st_fcn")]
GAP_VARIANTS = {"quarter_digits": (0.25, 1), "half_digits": (0.5, 1), "4x_steps": (1.0, 4)}


def gap_config(run, variant_name, steps, batch, num_train_full, num_eval=None):
  fraction, times = GAP_VARIANTS[variant_name]
  c = make_config(run, steps, batch, num_eval)
  with c.unlocked():
    if times != 1:
      _common().results_budget(c, c.num_steps * times, c.batch_size)
    c.data.num_train = int(num_train_full * fraction)
  return c


def _gap_committed(docs, run, variant_name):
  return docs / "results" / "gap" / f"{run_name(run)}_{variant_name}.json"


def train_gap(runs_dir: pathlib.Path, docs: pathlib.Path, steps=None, batch=None,
              num_eval=None):
  for run in GAP_MODELS:
    base = load_result(runs_dir, docs, run)
    if base is None:
      raise SystemExit(f"{workdir_of(runs_dir, run) / 'results.json'} is missing: run "
                       "`make_results.py run` first (the gap runs are compared with it).")
    num_train = base["examples"]["train"]
    for name in GAP_VARIANTS:
      config = gap_config(run, name, steps, batch, num_train, num_eval)
      _train_unless_done(config, runs_dir / "gap" / f"{run_name(run)}_{name}",
                         _gap_committed(docs, run, name),
                         f"{_budget(config)} on {config.data.num_train} digits")


def _gap_lines(runs_dir, found, docs):
  rows = []
  for run in GAP_MODELS:
    cells = []
    for name in GAP_VARIANTS:
      path = runs_dir / "gap" / f"{run_name(run)}_{name}" / "results.json"
      committed = _gap_committed(docs, run, name)
      if path.exists():
        committed.parent.mkdir(exist_ok=True)
        committed.write_text(path.read_text())
      if not committed.exists():
        return []
      cells.append(json.loads(committed.read_text()))
    if run not in found:
      return []
    full = found[run][0]
    rows.append(f"| {COLUMN_NAMES[run[0]]} | {label(run)} | {_pc(cells[0]['test_error'])} | "
                f"{_pc(cells[1]['test_error'])} | {_pc(full['test_error'])} | "
                f"{_pc(cells[2]['test_error'])} | {PAPER[run]} |")
  n = found[GAP_MODELS[0]][0]["examples"]["train"]
  steps = found[GAP_MODELS[0]][0]["steps"]
  return [
      "", "## Where the gap to the paper comes from", "",
      "% test error of the cheap models when the training digits or the steps change (written",
      "by `python docs/generate/make_results.py gap`; results in `docs/results/gap/`; seed 0). "
      "Every",
      "other setting is the tables'. The reading is in `docs/paper_notes.md`, \"First results\".",
      "",
      f"| dataset | model | {n // 4} digits | {n // 2} digits | {n} digits (the table) | "
      f"{n} digits, {4 * steps} steps | paper (60k digits, 150k steps of 256) |",
      "|---|---|---|---|---|---|---|",
  ] + rows


# ----------------------------------------------------------------- writing the docs


def _pc(x) -> str:
  return f"{100 * x:.2f}"


def _cell(seeds, key="test_error") -> str:
  """``mean`` over the seeds, with ``(min-max, n seeds)`` when there are several."""
  values = [r[key] for r in seeds.values()]
  if len(values) == 1:
    return _pc(values[0])
  return f"{_pc(np.mean(values))} ({_pc(min(values))}-{_pc(max(values))}, {len(values)} seeds)"


def _grid(runs, heads, cell) -> list:
  """A table of ``runs`` with models as rows and columns (distortions) as columns:
  ``heads(column)`` gives a column's header cells, ``cell(run)`` its text there."""
  columns = list(dict.fromkeys(run[0] for run in runs))
  names = [h for c in columns for h in heads(c)]
  lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for model, transform in dict.fromkeys(run[1:] for run in runs):
    cells = [cell((c, model, transform)) for c in columns]
    lines.append(f"| {label((columns[0], model, transform))} | " + " | ".join(cells) + " |")
  return lines


def _table(runs, found) -> list:
  """Ours beside the paper's for every run, as % test error."""
  return _grid(runs, lambda c: (f"{COLUMN_NAMES[c]}: ours", f"{COLUMN_NAMES[c]}: paper"),
               lambda run: f"{_cell(found[run]) if run in found else 'not run'} | "
                           f"{PAPER[run]}")


def _comparisons(runs, found) -> list:
  """Whether each ST model beats its base model, per column, from the seeds' means."""
  lines = []
  for column in dict.fromkeys(run[0] for run in runs):
    parts, losers = [], []
    for run in runs:
      base = base_of(run)
      if run[0] != column or base is None or run not in found or base not in found:
        continue
      st, b = _mean(found[run]), _mean(found[base])
      parts.append(f"{label(run)} {_pc(st)} against {label(base)} {_pc(b)}")
      if st >= b:
        losers.append(label(run))
    if not parts:
      continue
    verdict = ("every ST model is better than its base." if not losers else
               f"**not every ST model is better than its base: {', '.join(losers)} "
               f"{'is' if len(losers) == 1 else 'are'} not.**")
    lines.append(f"- {COLUMN_NAMES[column]}: {verdict} ({'; '.join(parts)}.)")
  return lines


def _localization_rates() -> str:
  """The sentence naming the runs whose localiser trains at a chosen fraction of the rate."""
  if not LOCALIZATION_LR:
    return ""
  rates = _experiment(("tc", None, None)).LOC_RATES
  runs = ", ".join(f"the {COLUMN_NAMES[run[0]]} {label(run)} at {rates[token]}x "
                   f"(variant `{token}`)" for run, token in LOCALIZATION_LR.items())
  return (f"Localisation nets train at the base rate, except {runs}, chosen on the "
          "validation split (docs/paper_notes.md). ")


def _digit_counts(found) -> str:
  """How many digits the runs trained, validated and tested on, from their results."""
  counts = {tuple(sorted(r["examples"].items())) for seeds in found.values()
            for r in seeds.values()}
  if len(counts) != 1:
    return "MNIST digits (the runs differ in their splits; see docs/results/*.json)"
  sizes = dict(next(iter(counts)))
  return (f"{sizes['train']} MNIST training digits ({sizes['validation']} more held out for "
          f"validation, {sizes['test']} test digits)")


def _curves(found, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  columns = [c for c in COLUMN_NAMES
             if any(run[0] == c and "validation_curve" in found[run].get(0, {})
                    for run in found)]
  if not columns:
    return False
  fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 4), squeeze=False)
  for ax, column in zip(axes[0], columns):
    for run in RUNS:
      points = found.get(run, {}).get(0, {}).get("validation_curve")
      if run[0] != column or not points:
        continue
      ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker=".",
              label=label(run), linestyle="--" if run[1] in FCN_FAMILY else "-")
    ax.set_title(f"{COLUMN_NAMES[column]}: validation error")
    ax.set_xlabel("step")
    ax.set_ylabel("% error")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


def _st_picture(runs_dir, run, result, path, n=16):
  """Inputs with the sampled region and the transformer's output, for n test digits
  (or pairs, for the addition: each channel apart, through every transformer)."""
  import jax  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from stn_jax.runtime import checkpoint as ckpt  # pylint: disable=import-outside-toplevel
  from stn_jax import tasks
  from stn_jax.train import pictures  # pylint: disable=import-outside-toplevel
  config = ml_collections.ConfigDict(result["config"])
  with config.unlocked():
    config.data.num_eval = n
  task = tasks.make_task(config)
  images = task._fixed("test")[0][:n]  # pylint: disable=protected-access
  params, _ = ckpt.params_from(str(workdir_of(runs_dir, run)))
  _, state = task.model().apply({"params": params}, images, train=False,
                                mutable=["intermediates"])
  grids = pictures.find_grids(jax.device_get(state["intermediates"]))
  images = np.asarray(images)
  if run[0] == "add":  # 8 pairs: channel 1 with every transformer's region and output, then
    half = [pictures.st_picture(images[:n // 2, ..., c:c + 1],  # channel 2 the same
                                [(k, g[:n // 2]) for k, g in grids], cell=64)
            for c in range(images.shape[-1])]
  else:  # two columns of 8 digits: input with box | output
    half = [pictures.st_picture(images[i:i + n // 2], [(k, g[i:i + n // 2]) for k, g in grids],
                                cell=64) for i in (0, n // 2)]
  gap = np.full((half[0].shape[0], 8, 3), 255, np.uint8)
  Image.fromarray(np.concatenate([half[0], gap, half[1]], axis=1)).save(path)


def _commit(found, runs_dir, docs):
  """Copies each run's result (with wall time and validation curve) into docs/results/."""
  for run, seeds in found.items():
    for seed, r in seeds.items():
      if not (workdir_of(runs_dir, run, seed) / "results.json").exists():
        continue  # already the committed one
      path = committed_path(docs, run, seed)
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")


def _wall(r) -> str:
  return f"{r['wall_seconds_total'] / 60:.1f}"


def _schedule(c: dict) -> str:
  n, b, every = c["num_steps"], c["batch_size"], c["decay_every"]
  decays = [str(step) for step in range(every, n, every)]
  if not decays:
    when = "throughout"
  elif len(decays) == 1:
    when = f"divided by ten at step {decays[0]}"
  else:
    when = f"divided by ten at steps {', '.join(decays[:-1])} and {decays[-1]}"
  return (f"{n} steps of batch {b} ({n * b / 1e6:.2f}M images), learning rate "
          f"{c['learning_rate']:g} {when}")


def _budget_line(runs, found, steps=None, batch=None) -> str:
  """The budget of a table's runs, from their results (before any, from the config)."""
  configs = [r["config"] for run in runs for r in found.get(run, {}).values()]
  configs = configs or [make_config(runs[0], steps, batch).to_dict()]
  kinds = list(dict.fromkeys(_schedule(c) for c in configs))
  if len(kinds) == 1:
    return f"**Budget (ours), the same for every run of this table:** {kinds[0]}."
  return ("**The runs of this table do not share one budget:** " + "; ".join(kinds) + ".")


def write_docs(runs_dir: pathlib.Path, steps=None, batch=None, docs: pathlib.Path = DOCS):
  found = find_results(runs_dir, docs)
  out = docs / "results"
  out.mkdir(exist_ok=True)
  _commit(found, runs_dir, docs)
  n_runs = sum(len(s) for s in found.values())
  lines = [
      "# The paper's MNIST tables on real MNIST digits",
      "",
      "Written by `python docs/generate/make_results.py write` from the runs' `results.json` "
      "files (kept in",
      "`docs/results/`); `python docs/generate/make_results.py run` trains what is missing "
      "(committed",
      "results are kept) and rewrites this page.",
      "",
  ] + textwrap.wrap(
      "**Budget (ours):** one per table, the same for every run of it, stated under the "
      "table; SGD with momentum 0.9, on the "
      + (_digit_counts(found) if found else "MNIST training digits")
      + "; test error on the official test digits under the project's fixed-seed distortion "
      "(for the addition: each test digit paired with a seeded partner). Seed 0 for every "
      "cell; seeds 1 and 2 too for the FCN-based models (cheap) and for every CNN/ST-CNN "
      "pair closer than twice the seed spread measured on CNN-based runs; a cell with "
      "several seeds shows their mean, then (smallest-largest, count). "
      + _localization_rates() + "Nothing was chosen on the test split. **Paper:** 150k steps "
      "of batch 256 (38.4M images), three seeds averaged, on all 60k MNIST training digits.",
      95) + [""]
  for title, runs in TABLES.items():
    lines += [f"## {title}", ""] + textwrap.wrap(_budget_line(runs, found, steps, batch),
                                                   95) + ["", "% test error.", ""]
    lines += _table(runs, found) + [""]
    if title in TABLE_NOTES:
      lines += textwrap.wrap(TABLE_NOTES[title], 95) + [""]
    comparisons = _comparisons(runs, found) if title not in TABLE_NOTES else []
    if comparisons:
      lines += ["**Does every ST model beat its base model (FCN or CNN), as in the paper?**",
                ""] + comparisons + [""]
    template = command(runs[0]).replace(variant(runs[0]), "<variant>").replace(
        run_name(runs[0]), "<name>")
    lines += [f"Each cell: `{template}` with",
              "the variant " + _variant_pattern(runs) + "; `--config.seed=1` (or 2) for the "
              "other seeds.", ""]
  lines += ["## Validation error and wall time", "",
            "What the settings above were chosen on: % validation error (mean over the seeds),",
            "and the minutes each run took on this 2-core machine (seed 0; the seeds took",
            "about as long). Both are in each run's JSON in `docs/results/`.", ""]
  for title, runs in TABLES.items():
    lines += [f"**{title}**, % validation error / minutes:", ""] + _grid(
        runs, lambda c: (COLUMN_NAMES[c],),
        lambda run: f"{_pc(_mean(found[run], 'validation_error'))} / {_wall(found[run][0])}"
        if 0 in found.get(run, {}) else "") + [""]
  notes = [f"- {COLUMN_NAMES[run[0]]} {label(run)}: {RUN_NOTES[run]}" for run in RUNS
           if run in found and run in RUN_NOTES]
  if notes:
    lines += ["Notes on the wall times:", ""] + notes + [""]
  if found and _curves(found, out / "curves.png"):
    lines += ["## Validation error during training (seed 0)", "",
              "![curves](results/curves.png)", ""]
    missing = [f"{COLUMN_NAMES[r[0]]} {label(r)}" for r in RUNS
               if r in found and "validation_curve" not in found[r].get(0, {})]
    if missing:
      lines += textwrap.wrap("Without a curve (committed before the curves were kept with "
                             "the results): " + ", ".join(missing) + ".", 95) + [""]
  lines += _coloc_lines(docs)
  lines += _picture_lines(runs_dir, found, out)
  lines += _gap_lines(runs_dir, found, docs)
  (docs / "results.md").write_text("\n".join(lines).rstrip() + "\n")
  print(f"wrote {docs / 'results.md'} ({len(found)} of {len(RUNS)} cells, {n_runs} runs)")


def _coloc_lines(docs) -> list:
  """Supplementary Table 2 from the results docs/generate/make_coloc.py committed, if any."""
  spec = importlib.util.spec_from_file_location("make_coloc", HERE / "make_coloc.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.section_lines(docs)


def _variant_pattern(runs) -> str:
  if runs[0][0] == "add":
    return "`<model>,results` (models: " + ", ".join(
        f"`{m}`" for m in dict.fromkeys(r[1] for r in runs)) + ")"
  columns = list(dict.fromkeys(r[0] for r in runs))
  text = (f"`{columns[0]},<model>[,<transform>],results`" if len(columns) == 1 else
          "`<distortion>,<model>[,<transform>],results` (distortions: "
          + ", ".join(f"`{c}`" for c in columns) + ")")
  extra = [f"{COLUMN_NAMES[r[0]]} {label(r)}: `{variant(r)}`" for r in runs
           if r in LOCALIZATION_LR]
  return text + (", the transform `projective` or `tps` for Proj and TPS" +
                 ("; " + "; ".join(extra) if extra else ""))


def _picture_lines(runs_dir, found, out) -> list:
  st = [run for run in RUNS if base_of(run) is not None and 0 in found.get(run, {})]
  if not st:
    return []
  lines = ["## What the transformers learnt", "",
           "16 test digits per model, in two columns of 8: the input with the region each",
           "transformer samples outlined, and its output. For the addition, 8 test pairs:",
           "channel 1 (left) and channel 2 (right), each with both transformers' regions and",
           "what each transformer makes of that channel (the supplement's Table 1, right).", ""]
  for column in COLUMN_NAMES:
    runs = [run for run in st if run[0] == column]
    if not runs:
      continue
    lines += [f"### {COLUMN_NAMES[column]}", ""]
    for run in runs:
      path = out / f"st_{run_name(run)}.png"
      if (workdir_of(runs_dir, run) / "checkpoints").is_dir():
        _st_picture(runs_dir, run, found[run][0], path)
      if path.exists():  # else a committed result whose checkpoints are gone
        lines += [f"{label(run)}:", "", f"![{run_name(run)}](results/{path.name})", ""]
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("command", choices=("run", "write", "gap"))
  parser.add_argument("--runs", default=str(REPO / "runs" / "first_results"))
  parser.add_argument("--steps", type=int, default=None,
                      help="replace every table's budget: train this many steps")
  parser.add_argument("--batch", type=int, default=None,
                      help="replace every table's budget: batches of this size")
  parser.add_argument("--docs", default=str(DOCS), help="where results.md and results/ go")
  parser.add_argument("--only", default=None,
                      help="run: train these columns only, e.g. r,p (" +
                      ", ".join(COLUMN_NAMES) + ")")
  parser.add_argument("--num_eval", type=int, default=None,
                      help="evaluate on this many digits only (a quick check, not results)")
  args = parser.parse_args(argv)
  runs_dir, docs = pathlib.Path(args.runs), pathlib.Path(args.docs)
  only = None
  if args.only is not None:
    only = {c.strip().lower() for c in args.only.split(",") if c.strip()}
    unknown = sorted(only - set(COLUMN_NAMES))
    if unknown or not only:
      parser.error(f"--only takes columns among {', '.join(COLUMN_NAMES)}, separated by "
                   f"commas, not {args.only!r}.")
  # Every command reads MNIST: training, and the pictures of the test digits.
  if not os.environ.get("STN_MNIST_DIR") and not (REPO / "data" / "mnist").is_dir():
    parser.error("set STN_MNIST_DIR to the directory of the MNIST IDX files "
                 "(see data/README.md).")
  if args.command == "run":
    train_all(runs_dir, docs, args.steps, args.batch, args.num_eval, only)
  if args.command == "gap":
    train_gap(runs_dir, docs, args.steps, args.batch, args.num_eval)
  write_docs(runs_dir, args.steps, args.batch, docs)


if __name__ == "__main__":
  main()
