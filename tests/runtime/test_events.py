"""The named points where tests hook into a run (stn_jax.runtime.events)."""

import sys

import pytest

from stn_jax.runtime import events


@pytest.fixture(autouse=True)
def _no_hooks():
  events.uninstall()
  yield
  events.uninstall()


def test_without_hooks_points_do_nothing_and_states_pass_through():
  state = object()
  events.point("step", 3, before=lambda: pytest.fail("no hook, so no call"))
  assert events.after_step(3, state) is state


def test_installed_hooks_see_every_point_and_may_replace_the_state():
  seen = []
  events.install(at_point=lambda name, step, before: seen.append((name, step, before)),
                 after_each_step=lambda step, state: state + step)
  events.point("saved", 4, before=print)
  assert seen == [("saved", 4, print)]
  assert events.after_step(2, 10) == 12


def test_hooks_named_in_the_environment_are_installed_once(monkeypatch, tmp_path):
  (tmp_path / "my_hooks.py").write_text(
      "from stn_jax.runtime import events\n"
      "CALLS = []\n"
      "def install():\n"
      "  CALLS.append(1)\n"
      "  events.install(after_each_step=lambda step, state: -state)\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setenv("STN_HOOKS", " my_hooks, ")
  monkeypatch.setattr(events, "_LOADED", set())
  events.load_hooks()
  events.load_hooks()
  assert sys.modules["my_hooks"].CALLS == [1]
  assert events.after_step(1, 5) == -5
