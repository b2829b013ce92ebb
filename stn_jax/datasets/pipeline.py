"""grain input pipelines over in-memory digit arrays, sharded per host.

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
"""

from __future__ import annotations

from typing import Iterator, Optional

import grain
import numpy as np

__all__ = ["eval_batches", "train_iterator"]


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
  index, count = _process(process_index, process_count)
  if global_batch % count:
    raise ValueError(f"`global_batch` ({global_batch}) must be divisible by the number of "
                     f"processes ({count}).")
  local = global_batch // count
  shard_size = len(range(index, len(images), count))
  if shard_size < local:
    raise ValueError(f"Process {index} holds {shard_size} examples, fewer than its batch of "
                     f"{local}.")
  ds = (grain.MapDataset.range(len(images))
        .slice(slice(index, None, count))
        .shuffle(seed=seed)
        .repeat(num_epochs)
        .batch(local, drop_remainder=True)
        .map(_to_batch(images, labels)))
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))


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
  index, count = _process(process_index, process_count)
  mine = np.arange(index, len(images), count)
  # Every process runs the same number of batches (a multi-host step needs all
  # of them), so the shares are padded to the largest one.
  per_process = -(-len(images) // count)
  num_batches = -(-per_process // batch_size)
  gather = _to_batch(images, labels)
  for start in range(0, num_batches * batch_size, batch_size):
    idx = mine[start:start + batch_size]
    pad = batch_size - len(idx)
    mask = np.concatenate([np.ones(len(idx), bool), np.zeros(pad, bool)])
    idx = np.concatenate([idx, np.zeros(pad, idx.dtype)])  # padding rows repeat example 0
    yield {**gather(idx), "mask": mask}
