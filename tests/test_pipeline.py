"""grain pipelines: determinism, resumable state, per-host sharding, evaluation padding."""

import numpy as np
import pytest

from stn_jax.datasets import pipeline

N = 50


def _data():
  images = (np.arange(N)[:, None, None] * np.ones((1, 4, 4))).astype(np.uint8)  # image i is all i
  labels = (np.arange(N) % 10).astype(np.uint8)
  return images, labels


def _ids(batch):
  return batch["image"][:, 0, 0, 0] * 255  # which examples a batch holds


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batches_are_nhwc_float_in_unit_range_with_int_labels():
  images, labels = _data()
  batch = next(pipeline.train_iterator(images, labels, global_batch=8, seed=0,
                                       process_index=0, process_count=1))
  assert batch["image"].shape == (8, 4, 4, 1) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= 0 and batch["image"].max() <= 49 / 255 + 1e-6
  assert batch["label"].dtype == np.int32
  np.testing.assert_array_equal(batch["label"], np.round(_ids(batch)).astype(int) % 10)


def test_deterministic_per_seed_and_reshuffled_each_epoch():
  images, labels = _data()

  def run(seed):
    it = pipeline.train_iterator(images, labels, global_batch=10, seed=seed, process_index=0,
                                 process_count=1)
    return np.concatenate([_ids(b) for b in _take(it, 10)])

  a, b, c = run(1), run(1), run(2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  epoch1, epoch2 = a[:N], a[N:]
  np.testing.assert_array_equal(np.sort(epoch1), np.arange(N))  # each epoch sees all, once
  np.testing.assert_array_equal(np.sort(epoch2), np.arange(N))
  assert not np.array_equal(epoch1, epoch2)


def test_state_restores_the_stream():
  images, labels = _data()
  kw = dict(global_batch=8, seed=3, process_index=0, process_count=1)
  it = pipeline.train_iterator(images, labels, **kw)
  _take(it, 4)
  state = it.get_state()
  expected = [_ids(b) for b in _take(it, 5)]
  fresh = pipeline.train_iterator(images, labels, **kw)
  fresh.set_state(state)
  for want, got in zip(expected, [_ids(b) for b in _take(fresh, 5)]):
    np.testing.assert_array_equal(got, want)


def test_hosts_read_disjoint_shards_that_cover_everything():
  images, labels = _data()
  seen = []
  for index in range(2):
    it = pipeline.train_iterator(images, labels, global_batch=10, seed=0, process_index=index,
                                 process_count=2, num_epochs=1)
    ids = np.concatenate([_ids(b) for b in it])
    assert len(ids) == 25  # 5 batches of 5 per host
    seen.append(set(np.round(ids).astype(int).tolist()))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(N))


def test_eval_pads_and_masks_and_every_host_runs_as_many_batches():
  images, labels = _data()
  counts, covered = [], []
  for index in range(3):
    batches = list(pipeline.eval_batches(images, labels, batch_size=8, process_index=index,
                                         process_count=3))
    counts.append(len(batches))
    for b in batches:
      covered += np.round(_ids(b)[b["mask"]]).astype(int).tolist()
  assert counts == [3, 3, 3]  # ceil(ceil(50 / 3) / 8)
  assert sorted(covered) == list(range(N))


def test_errors():
  images, labels = _data()
  with pytest.raises(ValueError, match="divisible by the number of processes"):
    pipeline.train_iterator(images, labels, global_batch=9, seed=0, process_index=0,
                            process_count=2)
  with pytest.raises(ValueError, match="same length"):
    pipeline.train_iterator(images, labels[:3], global_batch=8, seed=0, process_index=0,
                            process_count=1)
  with pytest.raises(ValueError, match=r"`process_index` must be in \[0, 2\)"):
    pipeline.train_iterator(images, labels, global_batch=8, seed=0, process_index=2,
                            process_count=2)
