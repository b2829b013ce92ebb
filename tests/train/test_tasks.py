"""The task interface and its registry (stn_jax.tasks)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stn_jax.errors import ConfigError
from stn_jax import tasks
from stn_jax.tasks import cub as cub_task
from stn_jax.tasks import distorted_mnist as mnist_task
from stn_jax.tasks import mnist_addition as addition_task
from stn_jax.tasks import svhn as svhn_task
from stn_jax.colocalisation.task import Colocalisation


def test_every_built_in_task_is_a_registered_task():
  assert tasks.TASKS == {"distorted_mnist": mnist_task.DistortedMnist,
                         "mnist_addition": addition_task.MnistAddition,
                         "svhn": svhn_task.Svhn, "cub": cub_task.Cub,
                         "colocalisation": Colocalisation}
  assert all(issubclass(cls, tasks.Task) for cls in tasks.TASKS.values())


def test_registering_checks_the_class_and_the_name():
  with pytest.raises(TypeError, match="decorates a subclass of stn_jax.tasks.Task"):
    tasks.register("not_a_task")(object)
  with pytest.raises(ValueError, match="A task named 'svhn' is registered already "
                     r"\(stn_jax.tasks.svhn.Svhn\)"):
    tasks.register("svhn")(type("Other", (tasks.Task,), {}))
  assert "not_a_task" not in tasks.TASKS and tasks.TASKS["svhn"] is svhn_task.Svhn


def test_an_unknown_task_is_named_with_the_known_ones():
  config = ml_collections.ConfigDict({"task": "birds"})
  with pytest.raises(ConfigError, match=r"Unknown task 'birds'; known: \['colocalisation', "
                     r"'cub', 'distorted_mnist', 'mnist_addition', 'svhn'\]"):
    tasks.make_task(config)
  config.task_module = "no_such_module_here"
  with pytest.raises(ConfigError, match="config.task_module 'no_such_module_here', which should "
                     "register the task 'birds', cannot be imported"):
    tasks.make_task(config)
  config.task_module = "json"  # imports, registers nothing
  with pytest.raises(ConfigError, match=r"Unknown task 'birds' \(config.task_module 'json' does "
                     r"not register it\)"):
    tasks.make_task(config)


def test_the_defaults_are_a_classifier_of_single_images():
  task = tasks.Task(ml_collections.ConfigDict({"task": "x"}))
  images = jnp.arange(6.0).reshape(2, 3)
  assert task.eval_forward(lambda v: 2 * v, images).tolist() == (2 * images).tolist()
  assert task.picture_inputs(images) is images
  assert task.eval_sets() == ("validation", "test")
  loss, error = task.losses(jnp.array([[2.0, 0.0], [2.0, 0.0]]), jnp.array([0, 1]))
  np.testing.assert_allclose(loss, [np.log1p(np.exp(-2.0)), np.log1p(np.exp(2.0))], rtol=1e-6)
  assert error.tolist() == [0.0, 1.0]
  for method, args in (("model", ()), ("train_iterator", (0, 1)), ("device_batch", (None, None)),
                       ("eval_batches", ("test", 8, 0, 1)), ("describe", ())):
    with pytest.raises(NotImplementedError):
      getattr(task, method)(*args)


def _readme_example():
  """The task and the config of README.md's "Adding an experiment", as written there."""
  import pathlib  # pylint: disable=import-outside-toplevel
  import re  # pylint: disable=import-outside-toplevel
  text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
  section = text.split("## Adding an experiment", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  files = {block.splitlines()[0].split(":")[0].lstrip("# ").strip(): block for block in blocks}
  assert set(files) == {"my_project/parity.py", "experiments/mnist_parity.py"}
  return files


def test_the_readme_example_of_a_new_experiment_trains(mnist_dir, tmp_path, monkeypatch):
  import importlib.util  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  from stn_jax import train  # pylint: disable=import-outside-toplevel
  for name, code in _readme_example().items():
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text(code, encoding="utf-8")
  (tmp_path / "my_project" / "__init__.py").write_text("", encoding="utf-8")
  monkeypatch.syspath_prepend(str(tmp_path))
  spec = importlib.util.spec_from_file_location("mnist_parity",
                                                tmp_path / "experiments" / "mnist_parity.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert "mnist_parity" not in tasks.TASKS  # registered by the trainer, through task_module
  with c.unlocked():  # a few steps on a few digits
    c.data.mnist_dir, c.tensorboard, c.pictures = str(mnist_dir), False, 0
    c.data.num_validation, c.data.num_train, c.data.num_eval = 64, 256, 64
    c.batch_size, c.eval_batch_size, c.num_steps, c.decay_every = 32, 32, 40, 30
    c.log_every, c.eval_every, c.checkpoint_every = 10, 20, 20
    c.model_kwargs.param_budget = 20_000
  try:
    results = train.train_and_evaluate(c, str(tmp_path / "run"))
    task = tasks.make_task(c)
    model = task.model()
    x = jnp.zeros((1, *task.input_shape))
    logits = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x), x))
    assert type(task).__name__ == "MnistParity" and logits.shape == (1, 2)
  finally:
    tasks.TASKS.pop("mnist_parity", None)
  written = json.loads((tmp_path / "run" / "results.json").read_text())
  assert written["test_error"] == results["test_error"] and written["steps"] == 40
  # Two classes learnt: better than a coin on even against odd after 40 steps.
  assert results["test_error"] < 0.4, results
