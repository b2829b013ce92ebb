"""The run's records (stn_jax.runtime.metrics.MetricWriter) when TensorBoard's writer fails."""

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading

from stn_jax.runtime import metrics as metrics_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _event_writers(writer):
  # tensorboardX internals: the object whose writer thread writes the event file.
  return [fw.event_writer for fw in writer._tb.all_writers.values()]  # pylint: disable=protected-access


def _fill_disk(writer):
  """Makes every write of TensorBoard's event file fail as a full disk does."""
  def full(*_):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  for events in _event_writers(writer):
    events._ev_writer._py_recordio_writer.write = full  # pylint: disable=protected-access
    events._ev_writer._py_recordio_writer.flush = full  # pylint: disable=protected-access


def test_a_dead_tensorboard_thread_neither_hangs_nor_loses_records(tmp_path, monkeypatch, caplog):
  # The thread's death is the point here, not its traceback.
  monkeypatch.setattr(threading, "excepthook", lambda args: None)
  caplog.set_level(logging.WARNING)
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=True)
  workers = [events._worker for events in _event_writers(writer)]  # pylint: disable=protected-access
  _fill_disk(writer)
  done = threading.Event()

  def write_many():
    # Far more records than tensorboardX's queue holds: with its thread dead and a shallow
    # queue, a put would wait for ever.
    for step in range(3000):
      writer.scalars(step, "train", {"loss": 1.0, "error": 0.5})
    done.set()

  thread = threading.Thread(target=write_many, daemon=True)
  thread.start()
  thread.join(timeout=60)
  assert done.is_set(), "writing the records hung after TensorBoard's thread died"
  assert not any(w.is_alive() for w in workers)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert sum("TensorBoard's writer stopped" in w for w in warnings) == 1, warnings
  writer.close()  # nothing left to flush: no error
  with open(tmp_path / "metrics.jsonl", encoding="utf-8") as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == list(range(3000))


def test_a_close_that_fails_is_one_warning_and_leaves_nothing_for_exit(tmp_path, monkeypatch,
                                                                       caplog):
  monkeypatch.setattr(threading, "excepthook", lambda args: None)
  caplog.set_level(logging.WARNING)
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=True)
  writer.scalars(1, "train", {"loss": 1.0})
  events = _event_writers(writer)
  _fill_disk(writer)
  writer.close()
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "Could not finish writing the records" in warnings[0], warnings
  assert "No space left on device" in warnings[0]
  # tensorboardX's exit handler closes the writer again: it must find nothing to do.
  for e in events:
    e.close()
    assert e._worker is None or not e._worker.is_alive()  # pylint: disable=protected-access


def test_a_picture_left_unread_by_a_dead_thread_does_not_hold_the_exit(tmp_path):
  # The writer thread dies on its first record; a picture (over a pipe's 64 KiB) reaches
  # tensorboardX's queue before the run sees the thread gone. Python joins the queue's
  # feeder thread at exit, and the feeder waits for ever on a pipe nobody reads.
  script = textwrap.dedent(f"""
      import threading, time
      import numpy as np
      import test_metrics
      from stn_jax.runtime import metrics
      threading.excepthook = lambda args: None
      writer = metrics.MetricWriter({str(tmp_path)!r}, tensorboard=True)
      workers = [e._worker for e in test_metrics._event_writers(writer)]
      test_metrics._fill_disk(writer)
      writer._tb.add_scalar("train/loss", 1.0, 1)
      while any(w.is_alive() for w in workers):
        time.sleep(0.01)
      noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
      writer._tb.add_image("transformers", noise, 1, dataformats="HWC")
      writer.close()
      print("closed", flush=True)
  """)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests", "train")]))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0 and "closed" in proc.stdout, proc.stderr[-3000:]
