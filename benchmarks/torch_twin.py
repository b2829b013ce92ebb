"""A PyTorch twin of the distorted-MNIST networks of ``stn_jax.models.mnist``.

Built from the same layer specs (``stn_jax.nn.layers``): ``Conv2d``, ceil-mode
``MaxPool2d``, ceil-mode ``AvgPool2d`` that averages over the pixels that exist,
``Linear`` (flattening a feature map first), ReLU after every weight layer but a
classifier's last; the affine transformer as ``affine_grid`` + ``grid_sample``
(bilinear, zeros) with the same ``align_corners``, and the average pooling after
it. ``load`` copies a Flax parameter tree in and ``flax_params`` gives the twin's
back in Flax's layout: conv kernels HWIO <-> OIHW, Dense kernels (in, out) <->
(out, in), and the first Dense after a feature map flattens NHWC (h, w, c) in
Flax but NCHW (c, h, w) here, so its rows are permuted.

Used by ``benchmarks/train_step.py`` (and its test); not part of the package.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from stn_jax.nn import SpatialTransformer
from stn_jax.nn.layers import AvgPool, Conv, Dense, MaxPool

__all__ = ["TorchStack", "TorchTwin", "max_rel_diff", "torch_trainer"]


class TorchStack(torch.nn.Module):
  """A :class:`stn_jax.nn.LayerStack` in PyTorch (NCHW), weight layers named as ours."""

  def __init__(self, stack, in_chw):
    super().__init__()
    if stack.dropout:
      raise NotImplementedError("The twin has no dropout; the MNIST networks have none.")
    self.weights = torch.nn.ModuleDict()
    self.plan = []  # (kind, name or module, relu)
    self.flatten_from = {}  # Dense name -> (C, H, W) of the map it flattens
    c, h, w = in_chw
    flat = None  # features once flattened
    last = len(stack.layers) - 1
    for i, layer in enumerate(stack.layers):
      relu = i < last or stack.relu_last
      if isinstance(layer, Conv):
        name = f"conv_{i}"
        self.weights[name] = torch.nn.Conv2d(c, layer.features, layer.kernel, layer.stride,
                                             layer.padding)
        h, w = ((s + 2 * layer.padding - layer.kernel) // layer.stride + 1 for s in (h, w))
        c = layer.features
        self.plan.append(("weight", name, relu))
      elif isinstance(layer, (MaxPool, AvgPool)):
        # Ceil mode, and the average over the pixels that exist, as ours.
        pool = (torch.nn.MaxPool2d(layer.window, ceil_mode=True) if isinstance(layer, MaxPool)
                else torch.nn.AvgPool2d(layer.window, ceil_mode=True, count_include_pad=False))
        h, w = (math.ceil(s / layer.window) for s in (h, w))
        self.plan.append(("pool", pool, False))
      elif isinstance(layer, Dense):
        name = f"fc_{i}"
        if flat is None:
          self.flatten_from[name] = (c, h, w)
          flat = c * h * w
        self.weights[name] = torch.nn.Linear(flat, layer.features)
        flat = layer.features
        self.plan.append(("dense", name, relu))
      else:
        raise TypeError(f"No twin for layer {layer!r}.")
    self.out_features = flat

  def forward(self, x):
    for kind, what, relu in self.plan:
      if kind == "pool":
        x = what(x)
        continue
      if kind == "dense" and x.ndim == 4:
        x = x.flatten(1)
      x = self.weights[what](x)
      if relu:
        x = F.relu(x)
    return x

  def load(self, params):
    """Copies a Flax parameter subtree in (HWIO -> OIHW; (in, out) -> (out, in); the NHWC
    flatten order before the first Dense -> NCHW)."""
    with torch.no_grad():
      for name, module in self.weights.items():
        kernel, bias = np.array(params[name]["kernel"]), np.array(params[name]["bias"])
        if isinstance(module, torch.nn.Conv2d):
          weight = kernel.transpose(3, 2, 0, 1)
        elif name in self.flatten_from:
          c, h, w = self.flatten_from[name]
          weight = kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(kernel.shape[1], -1)
        else:
          weight = kernel.T
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        module.bias.copy_(torch.from_numpy(bias))


class TorchTwin(torch.nn.Module):
  """Our distorted-MNIST ``Classifier`` (optionally with an affine transformer) in PyTorch."""

  def __init__(self, model):
    super().__init__()
    h, w, c = model.input_shape
    st = model.transformer
    self.loc = None
    if st is not None:
      if not isinstance(st, SpatialTransformer) or st.transform != "affine":
        raise NotImplementedError("The twin has one affine spatial transformer only.")
      if st.mode != "bilinear" or st.padding_mode != "zeros":
        raise NotImplementedError("The twin samples bilinearly with zero padding only.")
      self.out_hw = tuple(st.out_hw) if st.out_hw is not None else (h, w)
      self.align_corners = st.align_corners
      self.loc = TorchStack(st.localization, (c, h, w))
      self.regressor = torch.nn.Linear(self.loc.out_features, 6)
      self.pool = model.pool_after_st
      h, w = (math.ceil(s / self.pool) for s in self.out_hw)
    self.classifier = TorchStack(model.classifier, (c, h, w))

  def theta(self, x):
    return self.regressor(self.loc(x)).view(-1, 2, 3)

  def sample(self, x, theta):
    grid = F.affine_grid(theta, (x.shape[0], x.shape[1], *self.out_hw),
                         align_corners=self.align_corners)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=self.align_corners)

  def forward(self, x):
    if self.loc is not None:
      x = self.sample(x, self.theta(x))
      if self.pool > 1:
        x = F.avg_pool2d(x, self.pool, ceil_mode=True, count_include_pad=False)
    return self.classifier(x)

  def load(self, params):
    self.classifier.load(params["classifier"])
    if self.loc is not None:
      self.loc.load(params["transformer"]["localization"])
      out = params["transformer"]["localization_out"]
      with torch.no_grad():
        self.regressor.weight.copy_(torch.from_numpy(np.asarray(out["kernel"]).T.copy()))
        self.regressor.bias.copy_(torch.from_numpy(np.array(out["bias"])))

  def flax_params(self):
    """This twin's parameters as a Flax tree (for comparisons)."""
    def stack(s):
      out = {}
      for name, m in s.weights.items():
        weight = m.weight.detach().numpy()
        if isinstance(m, torch.nn.Conv2d):
          kernel = weight.transpose(2, 3, 1, 0)
        elif name in s.flatten_from:
          c, h, w = s.flatten_from[name]
          kernel = weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(c * h * w, -1)
        else:
          kernel = weight.T
        out[name] = {"kernel": kernel, "bias": m.bias.detach().numpy()}
      return out
    tree = {"classifier": stack(self.classifier)}
    if self.loc is not None:
      tree["transformer"] = {"localization": stack(self.loc), "localization_out": {
          "kernel": self.regressor.weight.detach().numpy().T,
          "bias": self.regressor.bias.detach().numpy()}}
    return tree


def torch_trainer(twin, x, y, learning_rate, momentum):
  """``step() -> loss``: one SGD step of ``twin`` on ``(x, y)``."""
  opt = torch.optim.SGD(twin.parameters(), lr=learning_rate, momentum=momentum)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(twin(x), y)
    loss.backward()
    opt.step()
    return loss

  return step


def max_rel_diff(a, b):
  """max |a - b| over max |b|."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
