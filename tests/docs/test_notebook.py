"""notebooks/tour.ipynb, the notebook a user opens first, executed end to end so that it
cannot rot: with real MNIST when $STN_MNIST_DIR is set (else its drawn digit), and without a
trained run (its last cell then says how to make one)."""

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "tour.ipynb"


def _outputs(nb):
  text = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      text.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
  return "\n".join(text)


@pytest.mark.slow  # a kernel, JAX and a 400-step fit (about 40 s)
def test_the_tour_runs_end_to_end(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no runs/ here: the last cell's branch without a trained run
  monkeypatch.delenv("STN_RUN", raising=False)
  monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = _outputs(nb)
  assert ("MNIST digit, label" in text) == bool(os.environ.get("STN_MNIST_DIR"))
  assert "loss" in text and "found theta" in text
  assert "No trained run at 'runs/rts_st_cnn'" in text
  pictures = sum("image/png" in out.get("data", {}) for cell in nb.cells
                 for out in cell.get("outputs", []))
  assert pictures >= 3  # the warps, the gradient and the fit
