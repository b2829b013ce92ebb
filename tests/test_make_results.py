"""docs/make_results.py: the one command that reruns issue 6's table and rewrites the results."""

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def make_results():
  spec = importlib.util.spec_from_file_location("make_results", REPO / "docs" / "make_results.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_run_gets_the_same_budget_and_schedule(make_results):
  for run in make_results.RUNS:
    c = make_results.make_config(run, 3000, 64)
    assert (c.num_steps, c.batch_size, c.learning_rate) == (3000, 64, 0.01)
    assert c.decay_every == 1200  # /10 at steps 1200 and 2400
    assert c.eval_every == c.checkpoint_every == 300
    assert c.model == run[1]
    assert c.model_kwargs.to_dict() == ({"transform": run[2]} if run[2] else {})
    # Only the TC ST-CNN's localiser trains at a chosen fraction of the rate.
    assert c.localization_lr_multiplier == (0.3 if run == ("tc", "st_cnn", None) else 1.0)


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


@pytest.mark.slow  # 30 s: two real training runs
def test_run_gap_and_write_end_to_end(make_results, mnist_dir, tmp_path, monkeypatch, capsys):
  cheap = [("rts", "fcn", None), ("rts", "st_fcn", None)]
  monkeypatch.setattr(make_results, "RUNS", cheap)
  monkeypatch.setattr(make_results, "GAP_MODELS", cheap)
  monkeypatch.setattr(make_results, "SEED_RUNS", cheap)
  monkeypatch.setenv("STN_MNIST_DIR", str(mnist_dir))
  full_size = make_results.make_config

  def small(run, steps, batch, num_eval=None):  # the fixture has 256 training digits
    c = full_size(run, steps, batch, num_eval)
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
  for name in ("FCN", "ST-FCN Aff"):
    row = next(line for line in page.splitlines() if line.startswith(f"| RTS | {name} |"))
    ours = float(row.split("|")[3])
    saved = json.loads((docs / "results" / f"rts_{'st_' if 'ST' in name else ''}fcn.json")
                       .read_text())
    assert ours == pytest.approx(100 * saved["test_error"], abs=0.006)
  assert (docs / "results" / "curves.png").stat().st_size > 0
  assert (docs / "results" / "st_rts_st_fcn.png").stat().st_size > 0
  assert "Where the gap" not in page  # no gap runs yet

  make_results.main(["run"] + args)  # finished runs are not retrained
  assert "rts_fcn: done" in capsys.readouterr().out

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

  make_results.main(["seeds", "--seeds", "3"] + args)
  page = (docs / "results.md").read_text()
  seed3 = json.loads((docs / "results" / "seeds" / "rts_st_fcn_seed3.json").read_text())
  seed0 = json.loads((docs / "results" / "rts_st_fcn.json").read_text())
  assert seed3["config"]["seed"] == 3 and seed3["steps"] == 4
  mean = 100 * (seed0["test_error"] + seed3["test_error"]) / 2
  row = next(line for line in page.splitlines() if line.startswith("| RTS | ST-FCN Aff | seed 0"))
  assert f"seed 3: {100 * seed3['test_error']:.2f} | {mean:.2f} |" in row


@pytest.mark.parametrize("seeds", ["0,1", "one"])
def test_seeds_refuses_seed_0_and_non_numbers(make_results, mnist_dir, tmp_path, monkeypatch,
                                              seeds):
  monkeypatch.setenv("STN_MNIST_DIR", str(mnist_dir))
  with pytest.raises(SystemExit):
    make_results.main(["seeds", "--seeds", seeds, "--runs", str(tmp_path), "--docs",
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
    make_results._train_unless_done(config(0.3), workdir, "4 steps of 8")
  assert sorted(p.name for p in workdir.rglob("*")) == before
