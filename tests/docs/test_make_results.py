"""docs/generate/make_results.py: the one command that trains the paper's MNIST tables and
writes the results page."""

import importlib.util
import json
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
# The addition table's budget (experiments/mnist_addition.py): steps, batch, decay_every, rate.
ADDITION_BUDGET = (15000, 64, 12000, 0.01)


@pytest.fixture
def make_results():
  spec = importlib.util.spec_from_file_location("make_results",
                                                REPO / "docs" / "generate" / "make_results.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_run_of_a_table_gets_that_tables_budget(make_results):
  for title, runs in make_results.TABLES.items():
    budgets = {(c.num_steps, c.batch_size, c.decay_every, c.learning_rate)
               for c in (make_results.make_config(run) for run in runs)}
    assert len(budgets) == 1, title
    addition = title.startswith("Supplementary Table 1")
    assert budgets == ({ADDITION_BUDGET} if addition else {(3000, 64, 1200, 0.01)})


def test_steps_and_batch_replace_every_tables_budget(make_results):
  assert len(make_results.RUNS) == 32 + 4 + 4 == len(set(make_results.RUNS))
  for run in make_results.RUNS:
    c = make_results.make_config(run, 3000, 64, seed=2)
    assert (c.num_steps, c.batch_size, c.learning_rate, c.seed) == (3000, 64, 0.01, 2)
    assert c.decay_every == 1200  # /10 at steps 1200 and 2400
    assert c.eval_every == c.checkpoint_every == 300
    assert c.model == run[1]
    assert c.task == ("mnist_addition" if run[0] == "add" else "distorted_mnist")
    assert c.model_kwargs.to_dict() == ({"transform": run[2]} if run[2] else {})
    # Only the TC ST-CNN's localiser trains at a chosen fraction of the rate.
    assert c.localization_lr_multiplier == (0.3 if run == ("tc", "st_cnn", None) else 1.0)
    assert run in make_results.PAPER
  assert make_results.command(("p", "st_cnn", "tps"), 1) == (
      "python -m stn_jax.main --config=experiments/distorted_mnist.py:p,st_cnn,tps,results "
      "--workdir=runs/p_st_cnn_tps --config.seed=1")


def test_a_finished_run_of_other_settings_is_refused_not_taken_as_done(make_results, tmp_path,
                                                                      capsys):
  run = ("add", "fcn", None)
  committed = tmp_path / "add_fcn.json"
  committed.write_text(json.dumps({"config": make_results.make_config(run, 3000, 64).to_dict()}))
  with pytest.raises(SystemExit, match="add_fcn.json holds a run with other settings: "
                                       "decay_every: 1200 there, 4000 here; num_steps: 3000 "
                                       "there, 10000 here"):
    make_results._train_unless_done(make_results.make_config(run, 10000, 64),
                                    tmp_path / "add_fcn", committed, "10000 steps of 64")
  assert not make_results._train_unless_done(make_results.make_config(run, 3000, 64),
                                             tmp_path / "add_fcn", committed, "3000 steps of 64")
  assert "add_fcn: done" in capsys.readouterr().out


def _result(error, validation=None):
  return {"test_error": error, "validation_error": validation or error,
          "wall_seconds_total": 60.0}


def test_the_page_states_each_tables_budget_and_says_when_its_runs_differ(make_results):
  runs = make_results.TABLES["Supplementary Table 1: MNIST addition"]
  line = make_results._budget_line(runs, {})  # no result yet: the config's
  assert line == ("**Budget (ours), the same for every run of this table:** 15000 steps of "
                  "batch 64 (0.96M images), learning rate 0.01 divided by ten at step 12000.")
  short = {"num_steps": 3000, "batch_size": 64, "decay_every": 1200, "learning_rate": 0.01}
  found = {runs[0]: {0: {"config": short}},
           runs[1]: {0: {"config": {**short, "num_steps": 6000}}}}
  assert make_results._budget_line(runs, found) == (
      "**The runs of this table do not share one budget:** 3000 steps of batch 64 (0.19M "
      "images), learning rate 0.01 divided by ten at steps 1200 and 2400; 6000 steps of batch "
      "64 (0.38M images), learning rate 0.01 divided by ten at steps 1200, 2400, 3600 and 4800.")


def test_the_seed_plan_follows_the_measured_spread(make_results):
  fcn_family = {r for r in make_results.RUNS if r[1] in make_results.FCN_FAMILY}
  assert set(make_results.seed_plan({})) == fcn_family  # cheap: always three seeds
  cnn, st = ("r", "cnn", None), ("r", "st_cnn", "tps")
  measured = {("tc", "cnn", None): {0: _result(0.045), 1: _result(0.048), 2: _result(0.050)}}
  # Spread 0.5 points: a pair 0.9 apart is within twice it, one 1.1 apart is not.
  close = {**measured, cnn: {0: _result(0.020)}, st: {0: _result(0.011)}}
  far = {**measured, cnn: {0: _result(0.022)}, st: {0: _result(0.011)}}
  assert {cnn, st} <= set(make_results.seed_plan(close))
  assert not {cnn, st} & set(make_results.seed_plan(far))
  # With no CNN-based run at three seeds there is no spread yet: every pair gets seeds.
  assert {cnn, st} <= set(make_results.seed_plan({cnn: far[cnn], st: far[st]}))


def test_the_page_says_plainly_when_an_st_model_does_not_beat_its_base(make_results):
  runs = make_results.TABLES["Table 1: distorted MNIST"]
  found = {("e", "fcn", None): {0: _result(0.03)}, ("e", "st_fcn", None): {0: _result(0.02)},
           ("e", "st_fcn", "tps"): {0: _result(0.03), 1: _result(0.04)},
           ("r", "cnn", None): {0: _result(0.01)}, ("r", "st_cnn", None): {0: _result(0.009)}}
  lines = make_results._comparisons(runs, found)
  assert lines[0].startswith("- R: every ST model is better than its base.")
  assert lines[1].startswith("- E: **not every ST model is better than its base: ST-FCN TPS "
                             "is not.**")
  assert "ST-FCN TPS 3.50 against FCN 3.00" in lines[1]  # the mean over its two seeds
  table = make_results._table(runs, found)
  assert table[0].startswith("| model | R: ours | R: paper | RTS: ours | RTS: paper |")
  row = next(line for line in table if line.startswith("| ST-FCN TPS |"))
  assert row.split(" | ")[7:9] == ["3.50 (3.00-4.00, 2 seeds)", "2.4 |"]


def test_gap_variants_change_only_digits_or_steps(make_results):
  run = ("tc", "st_fcn", None)
  base = make_results.make_config(run, 3000, 64)
  quarter = make_results.gap_config(run, "quarter_digits", 3000, 64, 17699)
  longer = make_results.gap_config(run, "4x_steps", 3000, 64, 17699)
  assert quarter.data.num_train == 4424 and quarter.num_steps == 3000
  assert longer.data.num_train == 17699 and longer.num_steps == 12000
  assert longer.decay_every == 4800
  for c in (quarter, longer):
    assert c.batch_size == base.batch_size and c.data.distortion == base.data.distortion


@pytest.mark.slow  # 50 s: 12 short training runs
def test_run_gap_and_write_end_to_end(make_results, mnist_dir, tmp_path, monkeypatch, capsys):
  cheap = [("rts", "fcn", None), ("rts", "st_fcn", None)]
  monkeypatch.setattr(make_results, "TABLES", {"Table 1: distorted MNIST": cheap})
  monkeypatch.setattr(make_results, "RUNS", cheap)
  monkeypatch.setattr(make_results, "GAP_MODELS", cheap)
  monkeypatch.setenv("STN_MNIST_DIR", str(mnist_dir))
  full_size = make_results.make_config

  def small(run, steps, batch, num_eval=None, seed=0):  # the fixture has 256 training digits
    c = full_size(run, steps, batch, num_eval, seed)
    with c.unlocked():
      c.data.num_validation = 64
      c.pictures = 0
      c.tensorboard = False
    return c

  monkeypatch.setattr(make_results, "make_config", small)
  runs, docs = tmp_path / "runs", tmp_path / "docs"
  docs.mkdir()
  args = ["--runs", str(runs), "--docs", str(docs), "--steps", "4", "--batch", "8",
          "--num_eval", "16"]
  make_results.main(["run"] + args)
  page = (docs / "results.md").read_text()
  text = " ".join(page.split())  # the budget paragraph is wrapped
  assert "4 steps of batch 8" in text
  assert "192 MNIST training digits" in text  # 256 less the 64 held out
  assert "except the TC ST-CNN Aff at 0.3x" in text
  for name, model in (("FCN", "fcn"), ("ST-FCN Aff", "st_fcn")):
    # FCN-based models train three seeds; the cell is their mean, then their range.
    errors = [json.loads((docs / "results" / path).read_text())["test_error"]
              for path in (f"rts_{model}.json", f"seeds/rts_{model}_seed1.json",
                           f"seeds/rts_{model}_seed2.json")]
    row = next(line for line in page.splitlines() if line.startswith(f"| {name} |"))
    mean = f"{100 * sum(errors) / 3:.2f} ({100 * min(errors):.2f}-{100 * max(errors):.2f}, " \
           "3 seeds)"
    assert row.split(" | ")[1] == mean, row
  saved = json.loads((docs / "results" / "rts_st_fcn.json").read_text())
  assert saved["config"]["seed"] == 0 and saved["validation_curve"][-1][0] == 4
  assert (docs / "results" / "curves.png").stat().st_size > 0
  assert (docs / "results" / "st_rts_st_fcn.png").stat().st_size > 0
  assert "python -m stn_jax.main --config=experiments/distorted_mnist.py:<variant>" in page
  assert "Where the gap" not in page  # no gap runs yet
  assert "- RTS: every ST model is better than its base." in page or (
      "- RTS: **not every ST model" in page)
  # A table with a note (the addition at chance) gets the note and no verdict.
  monkeypatch.setitem(make_results.TABLE_NOTES, "Table 1: distorted MNIST", "Noted here.")
  make_results.main(["write"] + args)
  noted = (docs / "results.md").read_text()
  assert "Noted here." in noted and "Does every ST model" not in noted
  monkeypatch.delitem(make_results.TABLE_NOTES, "Table 1: distorted MNIST")
  make_results.main(["write"] + args)

  make_results.main(["run"] + args)  # finished runs are not retrained
  assert "rts_fcn: done" in capsys.readouterr().out
  # A committed result counts as done, also when its run's directory is gone.
  shutil.rmtree(runs / "rts_fcn")
  make_results.main(["run"] + args)
  assert "rts_fcn: done" in capsys.readouterr().out and not (runs / "rts_fcn").exists()
  assert (docs / "results.md").read_text() == page

  # A finished run with other settings is neither taken as done nor overwritten.
  monkeypatch.setitem(make_results.LOCALIZATION_LR, ("rts", "st_fcn", None), "loc0.1")
  before = (runs / "rts_st_fcn" / "results.json").read_text()
  with pytest.raises(SystemExit, match="localization_lr_multiplier: 1.0 there, 0.1 here"):
    make_results.main(["run"] + args)
  assert (runs / "rts_st_fcn" / "results.json").read_text() == before
  monkeypatch.delitem(make_results.LOCALIZATION_LR, ("rts", "st_fcn", None))

  make_results.main(["gap"] + args)
  page = (docs / "results.md").read_text()
  assert "| 48 digits | 96 digits | 192 digits (the table) | 192 digits, 16 steps |" in page
  quarter = json.loads((docs / "results" / "gap" / "rts_st_fcn_quarter_digits.json").read_text())
  longer = json.loads((docs / "results" / "gap" / "rts_st_fcn_4x_steps.json").read_text())
  assert quarter["examples"]["train"] == 48 and quarter["steps"] == 4
  assert longer["examples"]["train"] == 192 and longer["steps"] == 16


@pytest.mark.parametrize("only", ["r,x", ","])
def test_only_refuses_unknown_columns(make_results, mnist_dir, tmp_path, monkeypatch, only):
  monkeypatch.setenv("STN_MNIST_DIR", str(mnist_dir))
  with pytest.raises(SystemExit):
    make_results.main(["run", "--only", only, "--runs", str(tmp_path), "--docs",
                       str(tmp_path)])


def test_gap_before_the_runs_says_what_to_do(make_results, mnist_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("STN_MNIST_DIR", str(mnist_dir))
  with pytest.raises(SystemExit, match="make_results.py run"):
    make_results.main(["gap", "--runs", str(tmp_path / "none"), "--docs", str(tmp_path)])


def test_a_started_run_with_other_settings_is_not_resumed(make_results, mnist_dir, tmp_path):
  from stn_jax import train  # pylint: disable=import-outside-toplevel

  def config(multiplier):
    c = make_results.make_config(("rts", "st_fcn", None), 4, 8, 16)
    with c.unlocked():
      c.data.mnist_dir = str(mnist_dir)
      c.data.num_validation = 64
      c.pictures = 0
      c.tensorboard = False
      c.localization_lr_multiplier = multiplier
    return c

  workdir = tmp_path / "rts_st_fcn"
  stopped = config(1.0)
  stopped.num_steps = 2  # stopped midway under the old setting
  train.train_and_evaluate(stopped, str(workdir))
  (workdir / "results.json").unlink()
  before = sorted(p.name for p in workdir.rglob("*"))
  with pytest.raises(SystemExit, match="localization_lr_multiplier: 1.0 there, 0.3 here"):
    make_results._train_unless_done(config(0.3), workdir, tmp_path / "none.json",
                                     "4 steps of 8")
  assert sorted(p.name for p in workdir.rglob("*")) == before


def test_the_colocalisation_section_shows_each_class_beside_the_paper(tmp_path):
  spec = importlib.util.spec_from_file_location("make_coloc",
                                                REPO / "docs" / "generate" / "make_coloc.py")
  make_coloc = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_coloc)
  docs, runs = tmp_path / "docs", tmp_path / "runs"
  assert make_coloc.section_lines(docs) == []  # nothing committed: no section
  # T and TC x 10 classes, with eq. (1) alone and with the confidence, and the paper's SGD
  # twice.
  assert len(make_coloc.runs_of()) == 42
  config = make_coloc._config(("tc", 3, "search"), runs)
  assert (config.optimizer, config.data.distortion, config.data.digit_class) == ("search",
                                                                                 "TC", 3)
  assert config.search.confidence_weight == 0.0
  assert config.encoder_from == str(runs / make_coloc.ENCODER)
  assert make_coloc._config(("tc", 3, "confidence"), runs).search.confidence_weight > 0
  assert make_coloc._config(("t", 8, "sgd"), runs).optimizer == "sgd"
  # Finished runs: T 0 both ways, T 1 and TC 0 with eq. (1) alone, TC 0 with the
  # confidence, T 8 by SGD.
  for run, share, secs in ((("t", 0, "search"), 0.97, 150.0), (("t", 1, "search"), 0.91, 140.0),
                           (("t", 0, "confidence"), 0.99, 120.0),
                           (("tc", 0, "search"), 0.8, 160.0),
                           (("tc", 0, "confidence"), 0.85, 130.0),
                           (("t", 8, "sgd"), 0.0, 300.0)):
    workdir = runs / make_coloc.run_name(*run)
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(
        {"localised": share, "mean_iou": 0.6, "scale": 0.4, "wall_seconds_this_session": secs}))
  make_coloc.commit(runs, docs)
  assert sorted(p.name for p in (docs / "results" / "coloc").iterdir()) == [
      "coloc_t_0.json", "coloc_t_0_confidence.json", "coloc_t_1.json", "coloc_t_8_sgd.json",
      "coloc_tc_0.json", "coloc_tc_0_confidence.json"]
  page = "\n".join(make_coloc.section_lines(docs))
  assert "| 0 | 97% | 99% | 100% | 80% | 85% | 75-93% | 120 / 130 |" in page
  assert "| 1 | 91% |  | 100% |  |  | 75-93% |  /  |" in page
  assert ("| mean | 94% (2 of 10 classes) | 99% (1 of 10 classes) | 100% | 80% (1 of 10 "
          "classes) | 85% (1 of 10 classes) | 75-93% | |") in page
  assert "- T 8: 0% localised, mean IoU 0.600, mean scale 0.40, 300 s" in page
  assert ("`python -m stn_jax.main --config=experiments/colocalisation.py:<t|tc>,<class>,search"
          in page)
  assert "goal" not in page  # not before every class has run
  for k in range(10):  # every T class: one at 89% fails the goal however high the mean
    for method in make_coloc.METHODS:
      workdir = runs / make_coloc.run_name("t", k, method)
      workdir.mkdir(parents=True, exist_ok=True)
      (workdir / "results.json").write_text(json.dumps(
          {"localised": 0.89 if (k, method) == (4, "search") else 0.99, "mean_iou": 0.7,
           "scale": 0.35, "wall_seconds_this_session": 100.0}))
  make_coloc.commit(runs, docs)
  page = "\n".join(make_coloc.section_lines(docs))
  assert ("- **T, ours, eq. (1) + confidence:** mean 99%, lowest class 99%: the goal (mean at "
          "least 95%, every class above 90%) is met.") in page
  assert ("- **T, ours, eq. (1) alone:** mean 98%, lowest class 89%: the goal (mean at least "
          "95%, every class above 90%) is not met.") in page
