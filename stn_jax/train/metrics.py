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
import time

import numpy as np

__all__ = ["MetricWriter", "Progress"]


class MetricWriter:
  """Writes scalars (and images) for process 0; does nothing on the others."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def scalars(self, step: int, split: str, values: dict):
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{split}/{k}", v, int(step))

  def image(self, step: int, tag: str, image: np.ndarray):
    """An ``(H, W, 3)`` uint8 picture into TensorBoard (the PNG files are written elsewhere)."""
    if self.enabled and self._tb is not None:
      self._tb.add_image(tag, np.asarray(image), int(step), dataformats="HWC")

  def close(self):
    if not self.enabled:
      return
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


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
