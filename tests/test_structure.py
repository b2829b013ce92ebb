"""The house rules of stn_jax/, checked on its source: one training loop, no task named
outside its own module or package, no private name reached across packages, and files and
functions small enough to read in one sitting."""

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "stn_jax"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 100


def _modules():
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    yield name, path, ast.parse(path.read_text(encoding="utf-8"))


def _package(module):
  """The room a module lives in: ``stn_jax.train.loop`` -> ``stn_jax.train``."""
  parts = module.split(".")
  return ".".join(parts[:2])


def test_files_and_functions_stay_small():
  long_files, long_functions = [], []
  for name, path, tree in _modules():
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines > MAX_FILE_LINES:
      long_files.append(f"{name} ({lines} lines)")
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          long_functions.append(f"{name}.{node.name} ({length} lines)")
  assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
  assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def _steps_loops(tree):
  """The ``while`` loops whose test names ``num_steps``: training loops."""
  return [node for node in ast.walk(tree) if isinstance(node, ast.While)
          and any(isinstance(n, ast.Attribute) and n.attr == "num_steps"
                  for n in ast.walk(node.test))]


def test_there_is_one_training_loop():
  loops = {name: len(_steps_loops(tree)) for name, _, tree in _modules() if _steps_loops(tree)}
  assert loops == {"stn_jax.train.loop": 1}


def _task_names():
  from stn_jax import tasks  # pylint: disable=import-outside-toplevel
  from stn_jax.tasks import base  # pylint: disable=import-outside-toplevel
  base._import_builtin_all()  # pylint: disable=protected-access
  return {name: cls.__module__ for name, cls in tasks.TASKS.items()}


def _names_task(node):
  """Whether ``node`` reads a config's task: ``x.task`` or ``x.get('task')``."""
  for n in ast.walk(node):
    if isinstance(n, ast.Attribute) and n.attr == "task":
      return True
    if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
        and n.args and isinstance(n.args[0], ast.Constant) and n.args[0].value == "task"):
      return True
  return False


def test_no_task_is_special_cased_outside_its_own_room():
  owners = _task_names()
  assert {"distorted_mnist", "mnist_addition", "svhn", "cub", "colocalisation"} <= set(owners)
  found = []
  for name, _, tree in _modules():
    for node in ast.walk(tree):
      if not (isinstance(node, ast.Compare) and _names_task(node)):
        continue
      for const in ast.walk(node):
        if isinstance(const, ast.Constant) and const.value in owners:
          owner = owners[const.value]
          if _package(owner) != _package(name) or (
              _package(owner) == "stn_jax.tasks" and owner != name):
            found.append(f"{name}:{node.lineno} compares the task with {const.value!r}")
  assert not found


def _imported_modules(tree, here):
  """Local name -> the stn_jax module it is bound to, in one module's imports."""
  bound = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("stn_jax") and alias.asname:
          bound[alias.asname] = alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stn_jax"):
      for alias in node.names:
        bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
  return bound


def test_no_private_name_is_used_across_packages():
  found = []
  for name, _, tree in _modules():
    bound = _imported_modules(tree, name)
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stn_jax"):
        for alias in node.names:
          if (alias.name.startswith("_") and not alias.name.startswith("__")
              and _package(node.module) != _package(name)):
            found.append(f"{name} imports {node.module}.{alias.name}")
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in bound and node.attr.startswith("_")
          and not node.attr.startswith("__")
          and _package(bound[node.value.id]) != _package(name)):
        found.append(f"{name}:{node.lineno} reads {bound[node.value.id]}.{node.attr}")
  assert not found


@pytest.mark.parametrize("rule", [test_files_and_functions_stay_small,
                                  test_no_private_name_is_used_across_packages])
def test_the_checks_catch_what_they_look_for(rule, tmp_path, monkeypatch):
  """Each check fails on a module made to break its rule."""
  bad = tmp_path / "stn_jax"
  (bad / "train").mkdir(parents=True)
  body = "\n".join(f"  x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
  (bad / "train" / "long.py").write_text(
      "from stn_jax.runtime.events import _POINT_HOOKS\n\n\ndef f():\n" + body + "\n")
  monkeypatch.setattr(sys.modules[__name__], "PACKAGE", bad)
  with pytest.raises(AssertionError):
    rule()
