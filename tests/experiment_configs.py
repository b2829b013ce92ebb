"""Loading the config files of ``experiments/`` in tests, with overrides."""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_config(name, variant=None):
  """``experiments/<name>.py``'s ``get_config(variant)``, as config_flags would load it."""
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def configure(name, variant=None, **overrides):
  """A config with ``overrides`` ({'data.mnist_dir': ..., 'num_steps': ...}) and no TensorBoard.

  Keys are dotted paths, as on the command line (``--config.data.mnist_dir=...``).
  """
  c = load_config(name, variant)
  with c.unlocked():
    c.tensorboard = False
    for key, value in overrides.items():
      node = c
      *path, last = key.split(".")
      for part in path:
        node = node[part]
      node[last] = value
  return c


def smoke_config(mnist_dir, variant="rts,st_cnn,smoke", **overrides):
  """The smoke variant of ``experiments/distorted_mnist.py`` on the MNIST files in ``mnist_dir``."""
  return configure("distorted_mnist", variant, **{"data.mnist_dir": str(mnist_dir), **overrides})
