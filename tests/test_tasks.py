"""The task interface and its registry (stn_jax.train.tasks)."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from stn_jax.errors import ConfigError
from stn_jax.train import cub_task, mnist_task, svhn_task, tasks


def test_every_built_in_task_is_a_registered_task():
  assert tasks.TASKS == {"distorted_mnist": mnist_task.DistortedMnist,
                         "mnist_addition": mnist_task.MnistAddition,
                         "svhn": svhn_task.Svhn, "cub": cub_task.Cub}
  assert all(issubclass(cls, tasks.Task) for cls in tasks.TASKS.values())


def test_registering_checks_the_class_and_the_name():
  with pytest.raises(TypeError, match="decorates a subclass of stn_jax.train.tasks.Task"):
    tasks.register("not_a_task")(object)
  with pytest.raises(ValueError, match="A task named 'svhn' is registered already "
                     r"\(stn_jax.train.svhn_task.Svhn\)"):
    tasks.register("svhn")(type("Other", (tasks.Task,), {}))
  assert "not_a_task" not in tasks.TASKS and tasks.TASKS["svhn"] is svhn_task.Svhn


def test_an_unknown_task_is_named_with_the_known_ones():
  config = ml_collections.ConfigDict({"task": "birds"})
  with pytest.raises(ConfigError, match=r"Unknown task 'birds'; known: \['cub', "
                     r"'distorted_mnist', 'mnist_addition', 'svhn'\]"):
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
