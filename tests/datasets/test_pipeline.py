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


# Record sources (prepared SVHN/CUB): the same guarantees, plus seeded augmentation.

def _records(n=N):
  return [{"id": np.int64(i), "pixels": np.full((2, 2), i, np.uint8)} for i in range(n)]


def _augment(record, rng):
  return {"id": record["id"], "noise": np.float32(rng.random())}


def _source_run(source, *, seed=0, steps=6, index=0, count=1, state=None, **kw):
  it = pipeline.source_train_iterator(source, global_batch=8, seed=seed, process_index=index,
                                      process_count=count, random_transform=_augment, **kw)
  if state is not None:
    it.set_state(state)
  return it, [next(it) for _ in range(steps)]


def test_source_batches_are_stacked_and_augmentation_is_seeded():
  _, a = _source_run(_records(), seed=1)
  _, b = _source_run(_records(), seed=1)
  _, c = _source_run(_records(), seed=2)
  assert a[0]["id"].shape == (8,) and a[0]["noise"].dtype == np.float32
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["id"], y["id"])
    np.testing.assert_array_equal(x["noise"], y["noise"])
  assert not np.array_equal(a[0]["noise"], c[0]["noise"])
  # Over two epochs every example comes back, with fresh augmentation.
  _, long = _source_run(_records(), seed=1, steps=12)
  ids = np.concatenate([x["id"] for x in long])
  noise = np.concatenate([x["noise"] for x in long])
  first = {}
  for i, v in zip(ids[:N], noise[:N]):
    first[int(i)] = v
  again = [(int(i), v) for i, v in zip(ids[N:], noise[N:])]
  assert again and all(v != first[i] for i, v in again)


def test_source_state_restores_records_and_their_augmentation():
  it, _ = _source_run(_records(), seed=3, steps=4)
  state = it.get_state()
  want = [next(it) for _ in range(5)]
  _, got = _source_run(_records(), seed=3, steps=5, state=state)
  for x, y in zip(want, got):
    np.testing.assert_array_equal(x["id"], y["id"])
    np.testing.assert_array_equal(x["noise"], y["noise"])


def test_source_hosts_are_disjoint_and_cover_everything():
  seen = []
  for index in range(2):
    it = pipeline.source_train_iterator(
        _records(48), global_batch=8, seed=0, process_index=index, process_count=2,
        num_epochs=1, transform=lambda r: {"id": r["id"]})
    seen.append([int(i) for b in it for i in b["id"]])
  assert len(seen[0]) == len(seen[1]) == 24
  assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(48))


def test_concat_and_subset_index_like_one_list():
  a, b = _records(5), _records(7)[2:]
  both = pipeline.Concat([a, b])
  assert len(both) == 10
  assert [int(both[i]["id"]) for i in range(10)] == [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]
  with pytest.raises(IndexError, match="out of range for 10 records"):
    both[10]
  sub = pipeline.Subset(both, [9, 0, 5])
  assert len(sub) == 3 and [int(sub[i]["id"]) for i in range(3)] == [6, 0, 2]
  with pytest.raises(ValueError, match=r"must lie in \[0, 10\)"):
    pipeline.Subset(both, [10])


def test_source_eval_pads_masks_and_covers_once():
  def stack(records):
    return {"id": np.array([r["id"] for r in records])}

  covered = []
  for index in range(2):
    batches = list(pipeline.source_eval_batches(_records(11), transform=stack, batch_size=4,
                                                process_index=index, process_count=2))
    assert len(batches) == 2  # ceil(ceil(11 / 2) / 4) on both hosts
    covered += [int(i) for b in batches for i in b["id"][b["mask"]]]
  assert sorted(covered) == list(range(11))


def test_source_errors():
  with pytest.raises(ValueError, match="exactly one of `transform` and `random_transform`"):
    pipeline.source_train_iterator(_records(), global_batch=8, seed=0, process_index=0,
                                   process_count=1)
  with pytest.raises(ValueError, match="no examples"):
    pipeline.source_train_iterator([], global_batch=8, seed=0, process_index=0,
                                   process_count=1, transform=dict)
  with pytest.raises(ValueError, match="fewer than its batch"):
    pipeline.source_train_iterator(_records(5), global_batch=8, seed=0, process_index=0,
                                   process_count=1, transform=dict)
