"""grain input pipelines, sharded per host: over in-memory digit arrays, or over
random-access record sources (prepared SVHN and CUB).

Training: every process reads only its own, disjoint slice of the examples
(``process_index::process_count``), shuffles it with the seed (reshuffled
every epoch), and yields batches of ``global_batch // process_count``. The
iterator's state (``get_state`` / ``set_state``) is a small dict that the
trainer checkpoints beside the model, so a resumed run reads on from where it
stopped. The paper's distortions are not applied here: they run on the
accelerator inside the training step (:func:`stn_jax.datasets.distortions.distort_batch`),
with a key derived from the step, so every step sees fresh distortions.

Evaluation: :func:`eval_batches` walks a split in order, once, padding the
last batch and marking the padding in ``mask``.

Record sources (:func:`source_train_iterator`, :func:`source_eval_batches`)
take anything with ``len`` and ``[i]`` (a prepared ``data_source``, a
:class:`Concat` of several, a :class:`Subset`) and a per-record transform that
turns one record into fixed-shape arrays; a random transform gets a NumPy
generator seeded from the seed and the example's place in the stream, so
augmentation is reproducible and resumes with the iterator.
"""

from __future__ import annotations

from typing import Iterator, Optional

import grain
import numpy as np

from stn_jax.datasets.mnist import split_train_validation
from stn_jax.errors import ConfigError

__all__ = ["Concat", "Subset", "eval_batches", "source_eval_batches",
           "source_train_iterator", "train_iterator"]


def _process(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # only when the caller leaves the sharding to JAX
    process_index, process_count = jax.process_index(), jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"`process_index` must be in [0, {process_count}), got {process_index}.")
  return process_index, process_count


def _check_arrays(images, labels):
  if len(images) != len(labels):
    raise ValueError(f"`images` and `labels` must have the same length, got {len(images)} "
                     f"and {len(labels)}.")
  if len(images) == 0:
    raise ValueError("There are no examples to read.")


def _to_batch(images, labels):
  scale = np.float32(255.0 if images.dtype == np.uint8 else 1.0)

  def gather(idx):
    image = images[idx].astype(np.float32) / scale
    if image.ndim == 3:  # (b, H, W): add the channel axis
      image = image[..., None]
    return {"image": image, "label": labels[idx].astype(np.int32)}

  return gather


def train_iterator(images, labels, *, global_batch: int, seed: int,
                   process_index: Optional[int] = None, process_count: Optional[int] = None,
                   num_epochs: Optional[int] = None, num_threads: int = 2,
                   prefetch: int = 4):
  """An endless (or ``num_epochs``-long) iterator of shuffled training batches.

  Args:
    images: ``(N, H, W)`` uint8 (scaled to [0, 1]) or ``(N, H, W[, C])`` float
      arrays; kept in host memory.
    labels: ``(N, ...)`` integer labels.
    global_batch: the batch over all processes; each yields its share.
    seed: the shuffle seed (the same on every process).
    process_index, process_count: this process's place; ``None``: JAX's.
    num_epochs: ``None`` repeats forever.
    num_threads, prefetch: grain's read threads and prefetch buffer.

  Returns:
    A grain ``DatasetIterator`` of ``{'image': (b, H, W, 1) float32, 'label': (b, ...) int32}``
    with ``b = global_batch // process_count``; it has ``get_state`` / ``set_state``.
  """
  _check_arrays(images, labels)
  ds, local = _shuffled_shard(len(images), global_batch, seed, process_index, process_count,
                              num_epochs)
  ds = ds.batch(local, drop_remainder=True).map(_to_batch(images, labels))
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))


def _shuffled_shard(n, global_batch, seed, process_index, process_count, num_epochs):
  """This process's indices into ``n`` examples, shuffled per epoch; and its batch size."""
  index, count = _process(process_index, process_count)
  if global_batch % count:
    raise ValueError(f"`global_batch` ({global_batch}) must be divisible by the number of "
                     f"processes ({count}).")
  local = global_batch // count
  shard_size = len(range(index, n, count))
  if shard_size < local:
    raise ConfigError(f"Process {index} holds {shard_size} training examples, fewer than its "
                      f"batch of {local}; give more examples (data.num_train, or a smaller "
                      "data.num_validation) or a smaller batch_size.")
  ds = (grain.MapDataset.range(n)
        .slice(slice(index, None, count))
        .shuffle(seed=seed)
        .repeat(num_epochs))
  return ds, local


def eval_batches(images, labels, *, batch_size: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Iterator[dict]:
  """This process's share of a split, in order, once; the last batch is padded.

  Args:
    images, labels: as in :func:`train_iterator`.
    batch_size: examples per batch on this process.
    process_index, process_count: this process's place; ``None``: JAX's.

  Yields:
    ``{'image', 'label', 'mask'}``; ``mask`` is False on padding rows.
  """
  _check_arrays(images, labels)
  gather = _to_batch(images, labels)
  for idx, mask in _eval_indices(len(images), batch_size, process_index, process_count):
    yield {**gather(idx), "mask": mask}


def _eval_indices(n, batch_size, process_index, process_count):
  index, count = _process(process_index, process_count)
  mine = np.arange(index, n, count)
  # Every process runs the same number of batches (a multi-host step needs all
  # of them), so the shares are padded to the largest one.
  per_process = -(-n // count)
  num_batches = -(-per_process // batch_size)
  for start in range(0, num_batches * batch_size, batch_size):
    idx = mine[start:start + batch_size]
    pad = batch_size - len(idx)
    mask = np.concatenate([np.ones(len(idx), bool), np.zeros(pad, bool)])
    idx = np.concatenate([idx, np.zeros(pad, idx.dtype)])  # padding rows repeat example 0
    yield idx, mask


class Concat:
  """Several random-access sources read as one, in order (e.g. SVHN train + extra)."""

  def __init__(self, sources):
    self._sources = list(sources)
    self._ends = np.cumsum([len(s) for s in self._sources])

  def __len__(self):
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, i):
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"index {i} is out of range for {len(self)} records.")
    k = int(np.searchsorted(self._ends, i, side="right"))
    return self._sources[k][i - (int(self._ends[k - 1]) if k else 0)]


class Subset:
  """The records of ``source`` at ``indices`` (e.g. a training split less its validation part)."""

  def __init__(self, source, indices):
    self._source, self._indices = source, np.asarray(indices, np.int64)
    if self._indices.ndim != 1:
      raise ValueError(f"`indices` must be one-dimensional, got shape {self._indices.shape}.")
    if len(self._indices) and (self._indices.min() < 0 or self._indices.max() >= len(source)):
      raise ValueError(f"`indices` must lie in [0, {len(source)}), got "
                       f"[{self._indices.min()}, {self._indices.max()}].")

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, i):
    return self._source[int(self._indices[i])]


def holdout_splits(pool, test, *, num_validation: int, seed: int,
                   num_train: Optional[int] = None, num_eval: Optional[int] = None) -> dict:
  """Training, validation and test sources: a seeded validation set held out of ``pool``.

  Args:
    pool: the random-access training records (e.g. SVHN train + extra).
    test: the test records, kept whole.
    num_validation, seed: the held-out size and the seed of
      :func:`~stn_jax.datasets.split_train_validation`.
    num_train: keep only the first ``num_train`` training records (None: all).
    num_eval: keep only the first ``num_eval`` validation and test records (None: all).

  Returns:
    ``{'train', 'validation', 'test'}``, each with ``len`` and ``[i]``.

  >>> splits = holdout_splits(list(range(10)), list(range(5)), num_validation=3, seed=0,
  ...                         num_eval=2)
  >>> {k: len(v) for k, v in splits.items()}
  {'train': 7, 'validation': 2, 'test': 2}
  """
  train_idx, val_idx = split_train_validation(len(pool), num_validation, seed=seed)
  if num_train is not None:
    train_idx = train_idx[:num_train]
  splits = {"train": Subset(pool, train_idx), "validation": Subset(pool, val_idx),
            "test": test}
  if num_eval is not None:
    for name in ("validation", "test"):
      splits[name] = Subset(splits[name], np.arange(min(num_eval, len(splits[name]))))
  return splits


def source_train_iterator(source, *, global_batch: int, seed: int, transform=None,
                          random_transform=None, process_index: Optional[int] = None,
                          process_count: Optional[int] = None,
                          num_epochs: Optional[int] = None, num_threads: int = 4,
                          prefetch: int = 4):
  """Shuffled training batches of transformed records, this process's share.

  Args:
    source: random-access records (``len`` and ``[i]``).
    global_batch, seed, process_index, process_count, num_epochs, num_threads,
      prefetch: as in :func:`train_iterator`.
    transform: ``record -> dict of arrays`` (deterministic), or
    random_transform: ``(record, numpy Generator) -> dict of arrays`` (e.g.
      random crops); exactly one of the two. Every output must have a fixed shape.

  Returns:
    A grain ``DatasetIterator`` of dicts of stacked arrays (``get_state`` /
    ``set_state`` resume it, augmentation included).
  """
  if (transform is None) == (random_transform is None):
    raise ValueError("Give exactly one of `transform` and `random_transform`.")
  if len(source) == 0:
    raise ValueError("There are no examples to read.")
  ds, local = _shuffled_shard(len(source), global_batch, seed, process_index, process_count,
                              num_epochs)
  ds = ds.map(lambda i: source[int(i)])
  ds = (ds.map(transform) if transform is not None
        else ds.random_map(random_transform, seed=seed))
  ds = ds.batch(local, drop_remainder=True)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))


def source_eval_batches(source, *, transform, batch_size: int,
                        process_index: Optional[int] = None,
                        process_count: Optional[int] = None) -> Iterator[dict]:
  """This process's share of a record source, in order, once, padded like :func:`eval_batches`.

  Args:
    source: random-access records.
    transform: ``list of records -> dict of stacked arrays``.
    batch_size, process_index, process_count: as in :func:`eval_batches`.

  Yields:
    ``transform``'s dict plus ``mask``.
  """
  if len(source) == 0:
    raise ValueError("There are no examples to read.")
  for idx, mask in _eval_indices(len(source), batch_size, process_index, process_count):
    yield {**transform([source[int(i)] for i in idx]), "mask": mask}
