"""Bad input fails with a sentence naming the argument, its shape and the expected shape,
at trace time: before XLA, and also inside jax.jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn_jax import ops

IMG = jnp.ones((2, 8, 8, 1))
GRID = jnp.zeros((2, 4, 4, 2))


def _raises_in_and_out_of_jit(fn, *args, match):
  with pytest.raises(ValueError, match=match):
    fn(*args)
  with pytest.raises(ValueError, match=match):
    jax.jit(fn)(*args)


@pytest.mark.parametrize("image,grid,match", [
    (jnp.ones((8, 8)), GRID, r"`image` must have shape \(\.\.\., H, W, C\).*got shape \(8, 8\)"),
    (IMG, jnp.zeros((2, 4, 4, 3)), r"`grid` must have shape \(\.\.\., Ho, Wo, 2\).*\(2, 4, 4, 3\)"),
    (IMG, jnp.zeros((4, 2)), r"`grid` must have shape \(\.\.\., Ho, Wo, 2\).*\(4, 2\)"),
    (IMG, jnp.zeros((3, 4, 4, 2)), r"same leading \(batch\).*\(2, 8, 8, 1\).*\(3, 4, 4, 2\)"),
    (jnp.ones((2, 8, 8, 1), jnp.int32), GRID, r"`image` must be a floating-point.*int32"),
])
def test_sample_shape_errors(image, grid, match):
  _raises_in_and_out_of_jit(ops.sample, image, grid, match=match)


@pytest.mark.parametrize("x,y", [
    (jnp.zeros((3, 4)), jnp.zeros((2, 4))),     # x's batch differs from the image's
    (jnp.zeros((2, 4)), jnp.zeros((1, 4))),     # y's batch differs from the image's
])
def test_sample_separable_batch_errors(x, y):
  _raises_in_and_out_of_jit(ops.sample_separable, IMG, x, y,
                            match=r"same leading \(batch\).*image \(2, 8, 8, 1\)")


def test_unknown_mode_and_padding():
  with pytest.raises(ValueError,
                     match=r"Unknown `mode` 'linear'.*'bilinear', 'nearest', 'bicubic'"):
    ops.sample(IMG, GRID, mode="linear")
  with pytest.raises(ValueError, match=r"Unknown `padding_mode` 'wrap'.*'zeros'"):
    ops.sample(IMG, GRID, padding_mode="wrap")


@pytest.mark.parametrize("fn,arg,match", [
    (lambda a: ops.affine_grid(a, (4, 4)), jnp.zeros((2, 3, 3)),
     r"`theta` must have shape \(\.\.\., 2, 3\).*\(2, 3, 3\)"),
    (lambda a: ops.projective_grid(a, (4, 4)), jnp.zeros((2, 7)),
     r"`h` must have shape \(\.\.\., 3, 3\) or \(\.\.\., 8\).*\(2, 7\)"),
    (lambda a: ops.attention_grid(a, (4, 4)), jnp.zeros((2, 4)),
     r"`params` must have shape \(\.\.\., 3\).*\(2, 4\)"),
    (lambda a: ops.tps_grid(a, (4, 4)), jnp.zeros((2, 9, 2)),
     r"`offsets` must have shape \(\.\.\., 16, 2\).*16 control points.*\(2, 9, 2\)"),
    (lambda a: ops.get_transform("affine").grid(a, (4, 4)), jnp.zeros((2, 4)),
     r"`params` must have shape \(\.\.\., 6\) for the 'affine' transform.*\(2, 4\)"),
    (lambda a: ops.warp(IMG, a, (4, 4)), jnp.zeros((3, 6)),
     r"one parameter vector per image.*\(2, 8, 8, 1\).*\(3, 6\)"),
])
def test_grid_shape_errors(fn, arg, match):
  _raises_in_and_out_of_jit(fn, arg, match=match)


@pytest.mark.parametrize("out_hw", [(0, 4), (4,), "44", (2.5, 3), None])
def test_bad_output_size(out_hw):
  with pytest.raises(ValueError, match=r"`out_hw` must be a pair of positive integers"):
    ops.affine_grid(jnp.eye(2, 3), out_hw)


def test_bad_tps_arguments():
  with pytest.raises(ValueError, match=r"`control_points` must have shape \(\.\.\., K, 2\)"):
    ops.tps_grid(jnp.zeros((4, 3)), (4, 4), control_points=np.zeros((4, 3)))
  with pytest.raises(ValueError, match=r"`regularization` must be a finite number >= 0"):
    ops.tps_grid(jnp.zeros((16, 2)), (4, 4), regularization=-1.0)
  with pytest.raises(ValueError, match=r"`offsets` must have shape \(\.\.\., 4, 2\)"):
    jax.jit(lambda c: ops.tps_grid(jnp.zeros((5, 2)), (4, 4), control_points=c))(jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match=r"the same K >= 3"):
    ops.tps_transform(jnp.zeros((4, 2)), jnp.zeros((5, 2)))
  with pytest.raises(ValueError, match=r"`src` must be a floating-point"):
    ops.tps_transform(jnp.zeros((4, 2), jnp.int32), jnp.zeros((4, 2)))


def test_warp_rejects_unknown_sampler_arguments():
  # Its sampler arguments are keywords of its own, so Python names the stray one.
  with pytest.raises(TypeError, match=r"unexpected keyword argument 'padding'"):
    ops.warp(IMG, jnp.zeros((2, 6)), (4, 4), padding="zeros")
