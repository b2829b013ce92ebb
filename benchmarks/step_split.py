"""Where the time of one training step goes: its parts, each jitted alone, against PyTorch.

For a distorted-MNIST ``Classifier`` (``cnn`` or ``st_cnn``): the forward pass,
forward + backward, and for a spatial transformer its localisation net (with the
regressor), the affine grid + bilinear sampler and the pooled classifier, each
forward + backward with the gradients the training step needs; then every
convolution's forward, weight gradient and input gradient (``F.conv2d``,
``torch.nn.grad.conv2d_weight``, ``conv2d_input``), without the bias, as the
models compute them (``stn_jax.nn.conv.conv``; the input gradient's method is
named). Each part's
JAX and PyTorch results are compared before timing. Used by
``benchmarks/train_step.py --split``.
"""

import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from stn_jax import ops
from stn_jax.nn import conv as conv_lib
from stn_jax.nn.layers import AvgPool, Conv, MaxPool, apply_pool

from interleave import calls_per_round, interleaved, jax_repeat, ratio_stats, torch_repeat
from torch_twin import max_rel_diff

__all__ = ["split_parts", "time_parts"]


def _conv(x, w):  # what the models' flax.linen.Conv computes, without the bias
  return conv_lib.conv(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _xent(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _conv_shapes(stack, hwc, where, data_input):
  """(label, NHWC input shape, HWIO kernel shape, whether the step needs the input gradient)."""
  h, w, c = hwc
  out = []
  for i, layer in enumerate(stack.layers):
    if isinstance(layer, Conv):
      if layer.stride != 1 or layer.padding:
        raise NotImplementedError("The split times stride-1 unpadded convolutions only.")
      out.append((f"{where} conv_{i} {layer.kernel}x{layer.kernel} {c}->{layer.features} "
                  f"on {h}x{w}", (h, w, c), (layer.kernel, layer.kernel, c, layer.features),
                  not (data_input and not out)))
      h, w, c = h - layer.kernel + 1, w - layer.kernel + 1, layer.features
    elif isinstance(layer, (MaxPool, AvgPool)):
      h, w = math.ceil(h / layer.window), math.ceil(w / layer.window)
    else:
      break
  return out


def split_parts(model, params, twin, images, labels, options):
  """[(part, jax call, torch call, check)] for one step of ``model`` cut into parts."""
  jit = lambda f: jax.jit(f, compiler_options=options or None)
  n = images.shape[0]
  rng = np.random.default_rng(1)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  y = torch.from_numpy(labels.astype(np.int64))
  parts = []

  def add(name, jax_fn, jax_args, torch_fn, compare=None):
    parts.append((name, jax_repeat(jax_fn, *jax_args), torch_repeat(torch_fn), compare))

  def zero_grads():
    for p in twin.parameters():
      p.grad = None

  forward = jit(lambda p, v: model.apply({"params": p}, v))
  def t_forward():
    with torch.no_grad():
      return twin(x)
  add("forward (logits)", forward, (params, images), t_forward,
      lambda: (forward(params, images), t_forward()))

  loss_grad = jit(jax.value_and_grad(lambda p, v, l: _xent(model.apply({"params": p}, v), l)))
  def t_loss_grad():
    zero_grads()
    loss = F.cross_entropy(twin(x), y)
    loss.backward()
    return loss
  add("forward + backward (loss, d/dparams)", loss_grad, (params, images, labels), t_loss_grad,
      lambda: (loss_grad(params, images, labels)[0], t_loss_grad()))

  convs = []
  st = model.transformer
  if st is not None:
    p_st = params["transformer"]
    loc = st.localization.clone(parent=None)
    t = ops.get_transform(st.transform)
    out_hw = tuple(st.out_hw) if st.out_hw is not None else images.shape[1:3]

    def theta_of(p, v):
      features = loc.apply({"params": p["localization"]}, v)
      return features @ p["localization_out"]["kernel"] + p["localization_out"]["bias"]

    theta = np.asarray(jit(theta_of)(p_st, images))
    ct = rng.normal(size=theta.shape).astype(np.float32)
    loc_grad = jit(jax.value_and_grad(lambda p, v, c: jnp.sum(theta_of(p, v) * c)))
    t_ct = torch.from_numpy(ct).view(-1, 2, 3)
    def t_loc():
      zero_grads()
      value = (twin.theta(x) * t_ct).sum()
      value.backward()
      return value
    add("localisation net + regressor, fwd + bwd (d/dparams)", loc_grad, (p_st, images, ct),
        t_loc, lambda: (loc_grad(p_st, images, ct)[0], t_loc()))

    def warp(th, v):
      grid = t.grid(th, out_hw, align_corners=st.align_corners)
      return ops.sample(v, grid, mode=st.mode, padding_mode=st.padding_mode,
                        align_corners=st.align_corners)

    warped = np.asarray(jit(warp)(theta, images))
    ct_w = rng.normal(size=warped.shape).astype(np.float32)
    sampler = jit(jax.value_and_grad(lambda th, v, c: jnp.sum(warp(th, v) * c)))
    t_theta = torch.from_numpy(theta).view(-1, 2, 3)
    t_ct_w = torch.from_numpy(ct_w.transpose(0, 3, 1, 2).copy())
    def t_sampler():
      th = t_theta.detach().requires_grad_(True)
      value = (twin.sample(x, th) * t_ct_w).sum()
      value.backward()
      return value
    add("affine grid + bilinear sampler, fwd + bwd (d/dtheta)", sampler, (theta, images, ct_w),
        t_sampler, lambda: (sampler(theta, images, ct_w)[0], t_sampler()))

    classifier = model.classifier.clone(parent=None)
    pool = AvgPool(model.pool_after_st)

    def cls_loss(p, u, l):
      if model.pool_after_st > 1:
        u = apply_pool(u, pool)
      return _xent(classifier.apply({"params": p}, u), l)

    cls_grad = jit(jax.value_and_grad(cls_loss, argnums=(0, 1)))
    t_warped = torch.from_numpy(warped.transpose(0, 3, 1, 2).copy())
    def t_cls():
      zero_grads()
      u = t_warped.detach().requires_grad_(True)
      v = F.avg_pool2d(u, model.pool_after_st, ceil_mode=True, count_include_pad=False)
      loss = F.cross_entropy(twin.classifier(v), y)
      loss.backward()
      return loss
    add(f"{model.pool_after_st}x avg pool + classifier, fwd + bwd (loss; d/dparams, d/dinput)",
        cls_grad, (params["classifier"], warped, labels), t_cls,
        lambda: (cls_grad(params["classifier"], warped, labels)[0], t_cls()))
    loc_hwc = (*images.shape[1:3], images.shape[3])
    convs += _conv_shapes(st.localization, loc_hwc, "loc", True)
    pooled = tuple(math.ceil(s / model.pool_after_st) for s in out_hw)
    convs += _conv_shapes(model.classifier, (*pooled, images.shape[3]), "classifier", False)
  else:
    convs += _conv_shapes(model.classifier, images.shape[1:], "classifier", True)

  to_nhwc = lambda a: a.permute(0, 2, 3, 1)
  to_hwio = lambda a: a.permute(2, 3, 1, 0)
  for label, hwc, kshape, needed in convs:
    xs = rng.normal(size=(n, *hwc)).astype(np.float32)
    ws = (rng.normal(size=kshape) / math.sqrt(np.prod(kshape[:3]))).astype(np.float32)
    ys = np.asarray(jit(_conv)(xs, ws))
    cts = rng.normal(size=ys.shape).astype(np.float32)
    tx = torch.from_numpy(xs.transpose(0, 3, 1, 2).copy())
    tw = torch.from_numpy(ws.transpose(3, 2, 0, 1).copy())
    tct = torch.from_numpy(cts.transpose(0, 3, 1, 2).copy())
    fwd = jit(_conv)
    wgrad = jit(lambda v, w, c: jax.vjp(lambda w_: _conv(v, w_), w)[1](c)[0])
    igrad = jit(lambda v, w, c: jax.vjp(lambda v_: _conv(v_, w), v)[1](c)[0])

    def t_fwd(tx=tx, tw=tw):
      with torch.no_grad():
        return F.conv2d(tx, tw)
    t_wgrad = lambda tx=tx, tw=tw, tct=tct: torch.nn.grad.conv2d_weight(tx, tw.shape, tct)
    t_igrad = lambda tx=tx, tw=tw, tct=tct: torch.nn.grad.conv2d_input(tx.shape, tw, tct)
    add(f"{label}: forward", fwd, (xs, ws), t_fwd,
        lambda f=fwd, a=(xs, ws), t=t_fwd: (f(*a), to_nhwc(t())))
    method = conv_lib.input_grad_method((n, *hwc), kshape, (1, 1), ((0, 0), (0, 0)))
    add(f"{label}: weight gradient" + (" (fft)" if method == "fft" else ""), wgrad,
        (xs, ws, cts), t_wgrad,
        lambda f=wgrad, a=(xs, ws, cts), t=t_wgrad: (f(*a), to_hwio(t())))
    suffix = f" ({method})" if needed else f" ({method}; not part of the step)"
    add(f"{label}: input gradient{suffix}", igrad, (xs, ws, cts), t_igrad,
        lambda f=igrad, a=(xs, ws, cts), t=t_igrad: (f(*a), to_nhwc(t())))
  return parts


def time_parts(label, model, params, twin, images, labels, *, rounds, round_seconds, options):
  """Checks, then times, every part of ``split_parts``; one row per part.

  ``twin`` must hold the same weights as ``params``.
  """
  rows = []
  for name, jax_call, torch_call, compare in split_parts(model, params, twin, images, labels,
                                                         options):
    ours, theirs = compare()
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    rel = max_rel_diff(ours, theirs)
    if rel > 1e-3:
      raise AssertionError(f"split {label}, {name}: stn_jax and PyTorch differ by {rel:.2e}")
    calls = {"jax": jax_call, "torch": torch_call}
    for call in calls.values():
      call(2)
    k = calls_per_round(calls, round_seconds)
    t = interleaved(calls, rounds, k)
    med, lo, hi = ratio_stats(t["jax"], t["torch"])
    rows.append({"model": label, "part": name, "jax_ms": 1e3 * statistics.median(t["jax"]),
                 "torch_ms": 1e3 * statistics.median(t["torch"]), "ratio": med,
                 "ratio_min": lo, "ratio_max": hi, "k": k})
    print(f"  {label:7s} {name:78s} {rows[-1]['jax_ms']:8.2f} ms {rows[-1]['torch_ms']:8.2f} "
          f"ms  {med:5.2f} [{lo:.2f}-{hi:.2f}]", flush=True)
  return rows
