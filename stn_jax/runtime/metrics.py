"""Where a run's numbers go: a JSONL log, TensorBoard event files and the console.

Only process 0 writes. ``metrics.jsonl`` has one object per line,
``{"step": ..., "split": "train" | "validation" | ..., name: value, ...}``;
the TensorBoard files (written with tensorboardX, without TensorFlow) hold the
same scalars as ``<split>/<name>``, and the pictures of what the transformers do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import time

import numpy as np

from stn_jax.runtime import tensorboard

__all__ = ["MetricWriter", "Progress", "read_tensorboard"]


def _picture_name(tag: str, step: int) -> str:
  # The transformers' pictures keep their documented name, pictures/step_N.png.
  return f"step_{step}.png" if tag == "transformers" else f"{tag}_step_{step}.png"


_PICTURE = re.compile(r"^(?:(?P<tag>\w+?)_)?step_(?P<step>\d+)\.png$")


class MetricWriter:
  """Writes scalars and pictures for process 0; does nothing on the others.

  Each (step, split) is recorded once, however often the run was stopped and
  resumed: a resumed run cuts ``metrics.jsonl`` back to what it held when the
  checkpoint it resumes from was saved (``resume_bytes``, see :meth:`offset`),
  drops the pictures of later steps, and writes the TensorBoard files anew from
  what is left (TensorBoard's own files may have lost their last minutes to a
  kill, and an appended file would repeat steps). A run that starts from step 0
  in a workdir that already holds records moves them to ``workdir/previous/N/``
  and says so.

  Args:
    workdir: the run's directory.
    enabled: False on every process but 0.
    tensorboard: also write TensorBoard event files (with tensorboardX).
    resume_step: the step of the checkpoint the run resumes from (None: step 0).
    resume_bytes: the size of ``metrics.jsonl`` recorded with that checkpoint
      (None for a checkpoint of an older version: then rows up to ``resume_step``
      are kept, final evaluations excepted).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
               resume_step: int | None = None, resume_bytes: int | None = None):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._pictures = os.path.join(workdir, "pictures")
    tb_dir = os.path.join(workdir, "tensorboard")
    if resume_step is None:
      _move_previous(workdir, [self._path, tb_dir, self._pictures])
    else:
      _cut_jsonl(self._path, resume_step, resume_bytes)
      _drop_pictures_after(self._pictures, resume_step)
      shutil.rmtree(tb_dir, ignore_errors=True)  # rebuilt below from what is kept
    self._jsonl = open(self._path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      # A deep queue: the writer thread is checked before each record (see _board), so a
      # thread that dies (a full disk) can never leave a put waiting on a full queue.
      self._tb = SummaryWriter(tb_dir, max_queue=1000)
      if resume_step is not None:
        self._replay()

  def _replay(self):
    with open(self._path, encoding="utf-8") as f:
      for line in f:
        row = json.loads(line)
        step, split = row.pop("step"), row.pop("split")
        if self._board() is None:
          return
        for k, v in row.items():
          self._tb.add_scalar(f"{split}/{k}", v, step)
    if os.path.isdir(self._pictures):
      from PIL import Image  # pylint: disable=import-outside-toplevel
      found = [(m, n) for n in os.listdir(self._pictures) if (m := _PICTURE.match(n))]
      for m, name in sorted(found, key=lambda x: int(x[0]["step"])):
        try:
          picture = np.asarray(Image.open(os.path.join(self._pictures, name)).convert("RGB"))
        except OSError:  # cut short by a full disk or a kill: TensorBoard goes without it
          continue
        if self._board() is None:
          return
        self._tb.add_image(m["tag"] or "transformers", picture, int(m["step"]),
                           dataformats="HWC")
    self._tb.flush()

  def scalars(self, step: int, split: str, values: dict):
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    if self._board() is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{split}/{k}", v, int(step))

  def image(self, step: int, tag: str, image: np.ndarray):
    """An ``(H, W, 3)`` uint8 picture: ``pictures/step_N.png`` for the transformers'
    (``pictures/TAG_step_N.png`` for another tag), and into TensorBoard."""
    if not self.enabled:
      return
    from PIL import Image  # pylint: disable=import-outside-toplevel
    os.makedirs(self._pictures, exist_ok=True)
    Image.fromarray(np.asarray(image)).save(
        os.path.join(self._pictures, _picture_name(tag, step)))
    if self._board() is not None:
      self._tb.add_image(tag, np.asarray(image), int(step), dataformats="HWC")

  def offset(self):
    """The size of ``metrics.jsonl`` now, saved with a checkpoint (None off process 0)."""
    return self._jsonl.tell() if self.enabled else None

  def flush(self):
    if self._board() is not None:
      self._tb.flush()

  def _board(self):
    """The TensorBoard writer, or None once its writer thread has died (a full disk met
    while it wrote): the run goes on without it, and metrics.jsonl, from which a resumed
    run rebuilds TensorBoard's files, still has every record."""
    if self._tb is not None and not tensorboard.alive(self._tb):
      logging.warning("TensorBoard's writer stopped; the run goes on recording into %s, "
                      "and a resumed run rebuilds TensorBoard's files from it.", self._path)
      tensorboard.abandon(self._tb)
      self._tb = None
    return self._tb

  def close(self):
    if not self.enabled:
      return
    # metrics.jsonl is flushed line by line, and a resumed run rebuilds TensorBoard's files
    # from it: a close that fails (a full disk) loses nothing that a resume needs.
    failed = []
    try:
      self._jsonl.close()
    except OSError as e:
      failed.append(e)
    if self._tb is not None:
      tensorboard.release_queues(self._tb)
      try:
        self._tb.close()
      except OSError as e:
        failed.append(e)
        tensorboard.abandon(self._tb)
    if failed:
      logging.warning("Could not finish writing the records in %s: %s", os.path.dirname(
          self._path), failed[0])


def _move_previous(workdir, paths):
  """Moves the records of an earlier start (no checkpoint left) to ``workdir/previous/N``."""
  present = [p for p in paths if os.path.exists(p) and (
      os.path.getsize(p) if os.path.isfile(p) else os.listdir(p))]
  if not present:
    return
  root = os.path.join(workdir, "previous")
  n = 1
  while os.path.exists(os.path.join(root, str(n))):
    n += 1
  target = os.path.join(root, str(n))
  os.makedirs(target)
  for p in present:
    shutil.move(p, os.path.join(target, os.path.basename(p)))
  logging.warning("Starting from step 0, but %s already held %s with no checkpoint to resume "
                  "from; moved them to %s.", workdir,
                  ", ".join(os.path.basename(p) for p in present), target)


def _cut_jsonl(path, step, size):
  if not os.path.exists(path):
    return
  if size is not None:
    if os.path.getsize(path) > size:
      with open(path, "r+b") as f:
        f.truncate(size)
    return
  with open(path, encoding="utf-8") as f:
    rows = [line for line in f if line.strip()]
  keep = []
  for line in rows:
    try:
      row = json.loads(line)
    except ValueError:
      continue  # a line cut short by a kill
    if row["step"] < step or (row["step"] == step and not row["split"].startswith("final")):
      keep.append(line if line.endswith("\n") else line + "\n")
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(keep)


def _drop_pictures_after(folder, step):
  if not os.path.isdir(folder):
    return
  for name in os.listdir(folder):
    m = _PICTURE.match(name)
    if m and int(m["step"]) > step:
      os.remove(os.path.join(folder, name))


def read_tensorboard(logdir: str) -> list[tuple[str, int, float]]:
  """Every scalar in the event files under ``logdir``, as ``(tag, step, value)``.

  Reads the TFRecord files directly (with tensorboardX's protobuf classes), so
  neither TensorFlow nor TensorBoard is needed; a record cut short by a kill ends
  its file.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  out = []
  for root, _, names in os.walk(logdir):
    for name in sorted(n for n in names if "tfevents" in n):
      with open(os.path.join(root, name), "rb") as f:
        while len(header := f.read(12)) == 12:
          (length,) = struct.unpack("<Q", header[:8])
          data = f.read(length)
          if len(data) < length or len(f.read(4)) < 4:
            break
          event = event_pb2.Event.FromString(data)
          out.extend((v.tag, int(event.step), float(v.simple_value))
                     for v in event.summary.value if v.HasField("simple_value"))
  return out


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
  """Console lines with rate and ETA: ``[#####.....] step 1200/150000 ... ETA 1h10m``."""

  def __init__(self, first_step: int, num_steps: int, batch_size: int, enabled: bool = True):
    self.num_steps, self.batch_size, self.enabled = num_steps, batch_size, enabled
    self._t0, self._step0 = time.time(), first_step
    self._last_t, self._last_step = self._t0, first_step

  def rates(self, step: int) -> dict:
    """Steps and images per second since the previous call."""
    now = time.time()
    steps = max(step - self._last_step, 0)
    dt = max(now - self._last_t, 1e-9)
    self._last_t, self._last_step = now, step
    return {"steps_per_second": steps / dt, "images_per_second": steps * self.batch_size / dt}

  def line(self, step: int, values: dict) -> str:
    elapsed = time.time() - self._t0
    done = max(step - self._step0, 0)
    eta = elapsed / done * (self.num_steps - step) if done else float("nan")
    width = 20
    filled = int(width * step / max(self.num_steps, 1))
    shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
    text = (f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.num_steps} {shown} "
            f"elapsed {_duration(elapsed)} ETA {_duration(eta) if done else '?'}")
    if self.enabled:
      logging.info("%s", text)
    return text
