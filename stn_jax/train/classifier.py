"""The classifier trainer: every task that trains a classifier (all but
co-localisation) runs through it, in the one loop of :mod:`stn_jax.train.loop`.

Data parallelism is JAX's own: a ``Mesh`` over every device of every process
with one axis, ``data``; the batch is sharded along it, the parameters are
replicated, and ``jax.jit`` compiles one step for the whole mesh. The same code
runs on one CPU, on N simulated CPU devices, on GPUs and on TPU pods. Each
process reads its own shard of the data; the global batch is put together
with ``jax.make_array_from_process_local_data``.

A run resumes by itself from the latest checkpoint in ``workdir``: parameters,
optimiser state, step, RNG and the data iterator's position. Its actions: the
validation set every ``eval_every`` steps (the best so far is also saved to ``best/``)
and the pictures of what the transformers do every ``picture_every``; at the end, every
held-out set of the task.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stn_jax import tasks
from stn_jax.errors import ConfigError
from stn_jax.runtime import checkpoint as ckpt
from stn_jax.runtime import quiet, xla
from stn_jax.train import loop, optim, pictures, trainers, validate
from stn_jax.train.state import TrainState, warm_start

__all__ = ["build_train_step", "evaluate_checkpoint", "train_and_evaluate"]


def _mesh(devices):
  return Mesh(np.array(devices), ("data",))


def _global(sharding, local_batch):
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def _check_config(config, n):
  validate.check_config(config, num_devices=n)
  trainers.check_runs_under(config, "classifier")


def _tx_builder(config):
  """``params -> (optax transformation, schedule)``: the paper's SGD with ``config``'s settings."""
  return lambda params: optim.make_optimizer(
      params, learning_rate=config.learning_rate, decay_every=config.decay_every,
      decay_factor=config.decay_factor, momentum=config.momentum,
      weight_decay=config.weight_decay,
      localization_lr_multiplier=config.localization_lr_multiplier)


def _init_state(config, model, task, tx_builder, replicated):
  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *task.input_shape), jnp.float32)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, dummy, train=False)
    return variables

  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  variables = jax.jit(init, out_shardings=replicated)(init_rng)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  if config.init_from:
    params, batch_stats = warm_start(config.init_from, params, batch_stats)
    params, batch_stats = jax.device_put((params, batch_stats), replicated)
  tx, schedule = tx_builder(params)
  opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
  state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), replicated), params=params,
                     batch_stats=batch_stats, opt_state=opt_state,
                     rng=jax.device_put(state_rng, replicated))
  return state, tx, schedule


def _make_steps(model, task, tx, schedule, state_sharding, batch_sharding, replicated):
  def apply(state, params, images, train, rng):
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    if train:
      out, mutated = model.apply(variables, images, train=True, rngs={"dropout": rng},
                                 mutable=["batch_stats"] if state.batch_stats else [])
      return out, mutated.get("batch_stats", state.batch_stats)
    return model.apply(variables, images, train=False), state.batch_stats

  def train_step(state, batch):
    key = jax.random.fold_in(state.rng, state.step)
    data_key, dropout_key = jax.random.split(key)
    images, labels = task.device_batch(batch, data_key)

    def loss_fn(params):
      out, stats = apply(state, params, images, True, dropout_key)
      losses, errors = task.losses(out, labels)
      return losses.mean(), (stats, errors)

    (loss, (stats, errors)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=stats,
                              opt_state=opt_state)
    grad_norm = optax.tree.norm(grads)
    return new_state, {"loss": loss, "error": errors.mean(), "grad_norm": grad_norm,
                       "learning_rate": schedule(state.step)}

  def eval_step(state, batch):
    forward = lambda images: apply(state, state.params, images, False, None)[0]
    out = task.eval_forward(forward, batch["image"])
    loss, errors = task.losses(out, batch["label"])
    mask = batch["mask"].astype(jnp.float32)
    return {"loss_sum": jnp.sum(loss * mask), "errors": jnp.sum(errors * mask),
            "count": jnp.sum(mask)}

  platform = next(iter(replicated.device_set)).platform
  options = xla.compiler_options(platform)
  xla.keep_freed_memory(platform)
  train = jax.jit(train_step, in_shardings=(state_sharding, batch_sharding),
                  out_shardings=(state_sharding, replicated), donate_argnums=0,
                  compiler_options=options)
  evaluate = jax.jit(eval_step, in_shardings=(state_sharding, batch_sharding),
                     out_shardings=replicated, compiler_options=options)
  return train, evaluate


def build_train_step(config, devices=None, *, task=None):
  """The trainer's own jitted training step for ``config``, outside the loop.

  For benchmarks and notebooks that time or inspect one step exactly as
  :func:`train_and_evaluate` runs it (same model, initial state, optimiser,
  mesh, shardings and compilation), without data files, checkpoints or metrics.

  Args:
    config: an ``ml_collections.ConfigDict`` from ``experiments/``.
    devices: the devices of the mesh (default: all of them, on every process).
    task: the task (default: ``config``'s); e.g. one whose ``device_batch``
      skips the distortion, to time the network alone.

  Returns:
    ``(train_step, state, make_batch)``: ``train_step(state, batch) -> (state,
    metrics)`` donates ``state``; ``state`` is the initial
    :class:`TrainState`; ``make_batch(host_batch)`` puts a dict of this
    process's numpy arrays (``image``, ``label``) on the mesh as a global batch.
  """
  devices = jax.devices() if devices is None else list(devices)
  task = tasks.make_task(config) if task is None else task
  mesh = _mesh(devices)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))

  tx_builder = _tx_builder(config)

  model = task.model()
  state, tx, schedule = _init_state(config, model, task, tx_builder, replicated)
  state_sharding = jax.tree_util.tree_map(lambda _: replicated, state)
  train_step, _ = _make_steps(model, task, tx, schedule, state_sharding, batch_sharding,
                              replicated)
  return train_step, state, lambda batch: _global(batch_sharding, batch)


def _evaluate(evaluate, state, task, name, config, batch_sharding):
  totals = {"loss_sum": 0.0, "errors": 0.0, "count": 0.0}
  local = config.eval_batch_size // jax.process_count()
  for batch in task.eval_batches(name, local, jax.process_index(), jax.process_count()):
    out = jax.device_get(evaluate(state, _global(batch_sharding, batch)))
    for k in totals:
      totals[k] += float(out[k])
  n = max(totals["count"], 1.0)
  return {"loss": totals["loss_sum"] / n, "error": totals["errors"] / n,
          "examples": totals["count"]}


class _Pictures:
  """Draws what the transformers do to fixed validation inputs (see ``pictures``).

  The inputs are the first ``config.pictures`` of the validation set, read by
  every process alike, so that the jitted forward pass, a collective over the
  mesh, sees the same array everywhere; process 0 writes the picture.
  """

  def __init__(self, model, task, config, state_sharding, replicated):
    self.n = int(config.pictures or 0)
    self.task, self.replicated = task, replicated
    self.inputs = None

    def intermediates(state, images):
      variables = {"params": state.params}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
      _, mutated = model.apply(variables, images, train=False, mutable=["intermediates"])
      return mutated.get("intermediates", {})

    self.fn = jax.jit(intermediates, in_shardings=(state_sharding, replicated),
                      out_shardings=replicated)

  def _read_inputs(self):
    batch = next(iter(self.task.eval_batches("validation", self.n, 0, 1)))
    images = np.asarray(batch["image"])[np.asarray(batch["mask"], bool)]
    return np.asarray(self.task.picture_inputs(images), np.float32)

  def __call__(self, ctx, step, state):
    if self.n <= 0:
      return
    if self.inputs is None:
      self.inputs = self._read_inputs()
      shapes = jax.eval_shape(self.fn, state, jax.ShapeDtypeStruct(self.inputs.shape,
                                                                   self.inputs.dtype))
      paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]
      if not any(getattr(k, "key", None) == "grid" for p in paths for k in p):
        logging.info("The model has no spatial transformer: no pictures.")
        self.n = 0
        return
    grids = pictures.find_grids(jax.device_get(
        self.fn(state, _global(self.replicated, self.inputs))))
    if jax.process_index() != 0:
      return
    ctx.writer.image(step, "transformers", pictures.st_picture(self.inputs, grids))


def train_and_evaluate(config, workdir: str, *, devices=None) -> dict:
  """Trains ``config``'s model on its task, evaluating and checkpointing in ``workdir``.

  Args:
    config: an ``ml_collections.ConfigDict`` from ``experiments/``.
    workdir: the run's directory; a run there is resumed.
    devices: the devices of the mesh (default: all of them, on every process).

  Returns:
    The contents of ``workdir/results.json``.

  Raises:
    stn_jax.errors.RunStopped: SIGINT or SIGTERM stopped the run, after saving a checkpoint.
    stn_jax.errors.ConfigError: a setting cannot work, or the workdir holds another run.
    stn_jax.errors.CheckpointError: a checkpoint could not be written or none could be read.
    stn_jax.train.NonFiniteLossError: the loss or the parameters became NaN or Inf.
  """
  quiet.quiet()
  devices = jax.devices() if devices is None else list(devices)
  _check_config(config, len(devices))
  t_start = time.time()
  task = tasks.make_task(config)
  model = task.model()
  mesh = _mesh(devices)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  logging.info("%d process(es), %d device(s) in the mesh: %s", jax.process_count(),
               len(devices), devices)
  # The data first: where it is missing, the run stops before it writes anything.
  data = task.train_iterator(jax.process_index(), jax.process_count())
  state, tx, schedule = _init_state(config, model, task, _tx_builder(config), replicated)
  state_sharding = jax.tree_util.tree_map(lambda _: replicated, state)
  train_step, eval_step = _make_steps(model, task, tx, schedule, state_sharding, batch_sharding,
                                      replicated)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))

  def step_fn(state):
    return train_step(state, _global(batch_sharding, next(data)))

  def validate_now(ctx, step, state):
    val = _evaluate(eval_step, state, task, "validation", config, batch_sharding)
    ctx.writer.scalars(step, "validation", val)
    logging.info("step %d validation: error %.4f, loss %.4f", step, val["error"], val["loss"])
    best = ctx.record["best_validation_error"]
    if best is None or val["error"] < best:
      ctx.record.update(best_validation_error=val["error"], best_step=step)
      return True
    return False

  def finish(ctx, step, state, check_stop):
    results = {"config": config.to_dict(), **task.describe(), "model": config.model,
               "num_params": num_params, "steps": step, "devices": len(devices),
               "processes": jax.process_count(), "platform": jax.devices()[0].platform,
               **ctx.record}
    for name in task.eval_sets():
      r = _evaluate(eval_step, state, task, name, config, batch_sharding)
      ctx.writer.scalars(step, f"final_{name}", r)
      results.update({f"{name}_error": r["error"], f"{name}_loss": r["loss"],
                      f"{name}_examples": r["examples"]})
      check_stop()
    if ctx.is_main:
      for name in task.eval_sets():
        logging.info("Final %s error: %.2f%% (%d examples).", name,
                     100 * results[f"{name}_error"], results[f"{name}_examples"])
    return results

  draw = _Pictures(model, task, config, state_sharding, replicated)
  actions = [loop.Every(config.eval_every, validate_now),
             loop.Every(config.picture_every or config.eval_every, draw, at_start=True)]
  return loop.train(config, workdir, state, step_fn, finish=finish, actions=actions, data=data,
                    record={"best_validation_error": None, "best_step": None},
                    shown=("loss", "error", "learning_rate", "images_per_second"),
                    start_time=t_start)


CHECKPOINTS = ("latest", "best")


def evaluate_checkpoint(config, workdir: str, *, which: str = "latest", sets=None,
                        pictures_of: int = 0, devices=None) -> dict:
  """Evaluates a trained run's checkpoint without training: ``python -m stn_jax.evaluate``.

  Args:
    config: the run's config (its ``config.json``, or the experiment file with overrides,
      e.g. another distortion's test set of the same input size).
    workdir: the run's directory.
    which: ``'latest'`` (the newest checkpoint, the final state of a finished run) or
      ``'best'`` (the one of least validation error).
    sets: the held-out sets to evaluate (default: the task's, validation and test).
    pictures_of: draw what the transformers do to the first this many images of the first
      set (0: no picture).
    devices: the devices to evaluate on (default: all).

  Returns:
    ``{"checkpoint": its folder, "step": its step, "sets": {name: {"error", "loss",
    "examples"}}, "picture": the PNG's path or None}``.
  """
  if which not in CHECKPOINTS:
    raise ConfigError(f"which must be one of {', '.join(CHECKPOINTS)}, got {which!r}.")
  devices = list(devices or jax.devices())
  _check_config(config, len(devices))
  task = tasks.make_task(config)
  known = task.eval_sets()
  sets = tuple(sets or known)
  unknown = [s for s in sets if s not in known]
  if unknown:
    raise ConfigError(f"This task's held-out sets are {', '.join(known)}; "
                      f"{', '.join(unknown)} is not one of them.")
  root = os.path.join(workdir, "best" if which == "best" else "checkpoints")
  steps = (sorted(int(n) for n in os.listdir(root) if n.isdigit()) if os.path.isdir(root)
           else [])
  if not steps:
    raise FileNotFoundError(f"{workdir!r} holds no {which} checkpoint (looked in {root}); give "
                            "the workdir of a trained run.")
  folder = os.path.join(root, str(steps[-1]))
  model = task.model()
  mesh = _mesh(devices)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  state, tx, schedule = _init_state(config, model, task, _tx_builder(config), replicated)
  params, batch_stats = ckpt.params_from(folder)
  shapes = lambda tree: jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), tree)  # noqa: E731
  if shapes(params) != shapes(state.params):
    raise ConfigError(f"The checkpoint {folder!r} does not fit the model this config builds "
                      f"({config.model} on inputs of {tuple(task.input_shape)}); evaluate "
                      "with the run's own config.")
  state = state.replace(params=jax.device_put(params, replicated),
                        batch_stats=jax.device_put(batch_stats, replicated))
  state_sharding = jax.tree_util.tree_map(lambda _: replicated, state)
  _, eval_step = _make_steps(model, task, tx, schedule, state_sharding, batch_sharding,
                             replicated)
  out = {"checkpoint": folder, "step": steps[-1], "sets": {}, "picture": None}
  for name in sets:
    out["sets"][name] = _evaluate(eval_step, state, task, name, config, batch_sharding)
  if pictures_of > 0:
    batch = next(iter(task.eval_batches(sets[0], pictures_of, 0, 1)))
    images = np.asarray(batch["image"])[np.asarray(batch["mask"], bool)]
    inputs = np.asarray(task.picture_inputs(images), np.float32)
    variables = {"params": state.params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    _, mutated = model.apply(variables, inputs, train=False, mutable=["intermediates"])
    grids = pictures.find_grids(jax.device_get(mutated.get("intermediates", {})))
    if grids and jax.process_index() == 0:
      from PIL import Image  # pylint: disable=import-outside-toplevel
      path = os.path.join(workdir, f"evaluate_{sets[0]}_step_{steps[-1]}.png")
      Image.fromarray(pictures.st_picture(inputs, grids)).save(path)
      out["picture"] = path
  return out


trainers.register("classifier", train_and_evaluate, evaluate=evaluate_checkpoint)
