"""The paper's SGD: step schedule, weight decay, localisation learning-rate multiplier."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stn_jax.train import optim

PARAMS = {"localization_net": {"w": jnp.ones(3)}, "classifier": {"w": jnp.ones(3)}}
GRADS = {"localization_net": {"w": jnp.full(3, 2.0)}, "classifier": {"w": jnp.full(3, 2.0)}}


def _first_update(**kw):
  tx, _ = optim.make_optimizer(PARAMS, learning_rate=0.01, decay_every=10, **kw)
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  return jax.tree_util.tree_map(np.asarray, updates)


def test_schedule_divides_by_ten_at_each_interval():
  s = optim.learning_rate_schedule(0.01, 50_000)
  got = [float(s(t)) for t in (0, 49_999, 50_000, 99_999, 100_000, 149_999)]
  np.testing.assert_allclose(got, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)


def test_plain_sgd_step_is_minus_lr_times_grad():
  u = _first_update(momentum=0.0)
  np.testing.assert_allclose(u["classifier"]["w"], -0.02)
  np.testing.assert_allclose(u["localization_net"]["w"], -0.02)


def test_localisation_nets_move_at_the_multiplier_also_with_momentum():
  tx, _ = optim.make_optimizer(PARAMS, learning_rate=0.01, decay_every=10, momentum=0.9,
                               localization_lr_multiplier=0.1)
  state = tx.init(PARAMS)
  for _ in range(3):
    u, state = tx.update(GRADS, state, PARAMS)
  np.testing.assert_allclose(u["localization_net"]["w"], 0.1 * u["classifier"]["w"], rtol=1e-6)
  # Three momentum steps of a constant gradient: -lr * g * (1 + 0.9 + 0.81).
  np.testing.assert_allclose(u["classifier"]["w"], -0.02 * 2.71, rtol=1e-6)


def test_weight_decay_adds_l2_gradient():
  u = _first_update(momentum=0.0, weight_decay=0.5)
  np.testing.assert_allclose(u["classifier"]["w"], -0.01 * (2.0 + 0.5 * 1.0))


def test_errors():
  with pytest.raises(ValueError, match="positive finite number, got nan"):
    optim.make_optimizer(PARAMS, learning_rate=float("nan"), decay_every=10)
  with pytest.raises(ValueError, match="positive number of steps"):
    optim.make_optimizer(PARAMS, learning_rate=0.1, decay_every=0)
  with pytest.raises(ValueError, match="no localisation parameters"):
    optim.make_optimizer({"classifier": PARAMS["classifier"]}, learning_rate=0.1,
                         decay_every=10, localization_lr_multiplier=0.1)
  with pytest.raises(ValueError, match="momentum"):
    optim.make_optimizer(PARAMS, learning_rate=0.1, decay_every=10, momentum=1.0)
  assert isinstance(optim.make_optimizer(PARAMS, learning_rate=0.1, decay_every=10)[0],
                    optax.GradientTransformation)
