"""CI's check of the light install (``pip install .``: jax, numpy and flax only).

Run by .ci/run with the light environment's python, from the repository root. Fails with a
sentence when the ops or the models need more than the light install gives, or when the
trainer, run without its `train` extra, does not say what to install.
"""

import importlib.util
import subprocess
import sys

TRAINER_ONLY = ("ml_collections", "tensorflow_datasets", "grain", "tensorboardX", "h5py", "PIL",
                "array_record", "matplotlib", "pytest")


def main():
  present = [m for m in TRAINER_ONLY if importlib.util.find_spec(m) is not None]
  if present:
    sys.exit(f"The light install brought {', '.join(present)}; they belong to an extra.")

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from stn_jax import models, ops  # pylint: disable=import-outside-toplevel

  image = jnp.zeros((1, 28, 28, 1)).at[:, 8:20, 12:16].set(1.0)
  thetas = {"affine": jnp.array([[0.8, 0.1, 0.05, -0.1, 0.9, 0.0]]),
            "attention": jnp.array([[0.7, 0.1, -0.1]]),
            "projective": jnp.array([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.05, 0.0]])}
  for transform, theta in thetas.items():
    out = ops.warp(image, theta, (28, 28), transform=transform)
    if out.shape != (1, 28, 28, 1) or not bool(jnp.isfinite(out).all()):
      sys.exit(f"ops.warp with {transform} gave {out.shape} or non-finite values.")
  grad = jax.grad(lambda t: ops.warp(image, t, (28, 28), transform="affine").sum())(
      thetas["affine"])
  if not np.any(np.asarray(grad) != 0):
    sys.exit("The gradient of a warp with respect to theta is zero everywhere.")
  model = models.get_model("st_cnn", input_shape=(28, 28, 1))
  variables = model.init(jax.random.PRNGKey(0), image)
  logits = model.apply(variables, image)
  logits = logits[0] if isinstance(logits, tuple) else logits
  if logits.shape[-1] != 10:
    sys.exit(f"The st_cnn model gave logits of shape {logits.shape}.")

  ran = subprocess.run([sys.executable, "-m", "stn_jax.main",
                        "--config=experiments/distorted_mnist.py:rts,st_cnn,smoke",
                        "--workdir=/tmp/stn_jax_light_install"], capture_output=True, text=True,
                       timeout=120)
  if ran.returncode == 0 or "the `train` extra" not in ran.stderr:
    sys.exit("Without the train extra, python -m stn_jax.main should stop and name the extra; "
             f"it exited with {ran.returncode}: {ran.stderr[-500:]}")
  print("light install: ops, gradients and st_cnn work with jax, numpy and flax only; the "
        "trainer names the train extra.")


if __name__ == "__main__":
  main()
