"""``python -m stn_jax.evaluate``: a trained run evaluated without training, and what the
main job prints on the way (the compile line, the final errors, the path of results.json)."""

import json

import pytest

from cli_helpers import REPO, SMOKE, error_line, run


def test_evaluate_refuses_what_is_not_a_trained_run(tmp_path):
  error_line(run(f"--workdir={tmp_path}", module="stn_jax.evaluate"), "has no config.json")
  (tmp_path / "config.json").write_text(json.dumps({"task": "colocalisation"}))
  error_line(run(f"--workdir={tmp_path}", module="stn_jax.evaluate"),
             "co-localisation run has no held-out sets")


@pytest.mark.slow  # trains the smoke run, then evaluates it twice (about a minute)
def test_a_trained_run_is_evaluated_to_the_figures_of_its_results(mnist_dir, tmp_path):
  workdir = tmp_path / "run"
  trained = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}", f"--workdir={workdir}")
  assert trained.returncode == 0, trained.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  # The console says what it is doing and what came out.
  assert "Compiling the training step" in trained.stderr
  assert f"Final test error: {100 * results['test_error']:.2f}%" in trained.stderr
  assert f"Results: {workdir / 'results.json'}" in trained.stderr
  assert (workdir / "pictures" / "step_0.png").exists()  # a picture before any training

  out = run(f"--workdir={workdir}", "--pictures=4", module="stn_jax.evaluate")
  assert out.returncode == 0, out.stderr[-3000:]
  evaluation = json.loads((workdir / "evaluation.json").read_text())
  for name in ("validation", "test"):  # the final state: the figures of results.json
    assert evaluation["sets"][name]["error"] == pytest.approx(results[f"{name}_error"],
                                                              abs=1e-9)
    assert f"{name} error: {100 * results[f'{name}_error']:.2f}%" in out.stdout
  assert evaluation["step"] == results["steps"]
  assert (workdir / f"evaluate_validation_step_{results['steps']}.png").stat().st_size > 0

  out = run(f"--workdir={workdir}", "--checkpoint=best", "--sets=validation", "--pictures=0",
            f"--out={tmp_path / 'best.json'}", module="stn_jax.evaluate")
  assert out.returncode == 0, out.stderr[-3000:]
  best = json.loads((tmp_path / "best.json").read_text())
  assert best["step"] == results["best_step"] and list(best["sets"]) == ["validation"]
  assert best["sets"]["validation"]["error"] == pytest.approx(results["best_validation_error"],
                                                              abs=1e-9)
  # The notebook's last cell shows this run (notebooks/tour.ipynb; tests/docs/test_notebook.py
  # runs it without one).
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(REPO / "notebooks" / "tour.ipynb", as_version=4)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("STN_RUN", str(workdir))
    mp.setenv("PYTHONPATH", str(REPO))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
  shown = "".join(out.get("text", "") for out in nb.cells[-1].get("outputs", []))
  assert (f"step {results['steps']}: validation error "
          f"{100 * results['validation_error']:.2f}%") in shown
  assert any("image/png" in out.get("data", {}) for out in nb.cells[-1]["outputs"])
  error_line(run(f"--workdir={workdir}", "--sets=train", module="stn_jax.evaluate"),
             "train is not one of them")
  # Another config whose model does not fit the checkpoint: said, not a shape error.
  error_line(run(f"--workdir={workdir}", "--config=experiments/distorted_mnist.py:r,fcn,smoke",
                 f"--config.data.mnist_dir={mnist_dir}", module="stn_jax.evaluate"),
             "does not fit the model")
