"""The conventions of the public API, and what importing stn_jax.ops pulls in."""

import inspect
import subprocess
import sys

import pytest

from stn_jax import ops

FUNCTIONS = [name for name in ops.__all__ if inspect.isfunction(getattr(ops, name))]


def test_public_names_exist():
  for name in ops.__all__:
    assert hasattr(ops, name), name
  assert {"affine_grid", "sample", "projective_grid", "tps_grid", "attention_grid",
          "get_transform", "warp"} <= set(FUNCTIONS)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_docstrings_have_args_returns_and_an_example(name):
  doc = inspect.getdoc(getattr(ops, name))
  assert doc, f"{name} has no docstring"
  assert "Returns" in doc or "return" in doc.lower(), name
  if name in ("affine_grid", "sample", "projective_grid", "tps_grid", "attention_grid",
              "get_transform", "warp", "sample_separable", "crop_and_resize", "tps_transform"):
    assert "Args:" in doc and "Returns:" in doc and ">>>" in doc, name


@pytest.mark.parametrize("name", FUNCTIONS)
def test_options_are_keyword_only(name):
  params = inspect.signature(getattr(ops, name)).parameters
  for option in ("mode", "padding_mode", "align_corners", "control_points", "regularization",
                 "transform", "separable"):
    if option in params:
      assert params[option].kind is inspect.Parameter.KEYWORD_ONLY, (name, option)


def test_import_pulls_in_jax_and_numpy_only():
  code = (
      "import sys\n"
      "import stn_jax.ops\n"
      "heavy = ['flax', 'optax', 'orbax', 'grain', 'tensorflow', 'tensorflow_datasets',\n"
      "         'torch', 'kornia', 'matplotlib', 'PIL', 'ml_collections', 'absl.flags']\n"
      "print(sorted(m for m in heavy if m in sys.modules))\n"
      "print(sorted(m for m in sys.modules if m.startswith('stn_jax')))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
  loaded_heavy, ours = result.stdout.strip().splitlines()
  assert loaded_heavy == "[]"
  assert all(m.startswith(("stn_jax.ops", "'stn_jax'")) or m == "stn_jax"
             for m in eval(ours)), ours


def test_readme_example_runs_and_warps():
  """The README's five-line example is real code with the result it claims."""
  import pathlib
  import re

  import numpy as np

  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  section = readme.split("## Warp an image in five lines", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert blocks, "README.md's 'Warp an image in five lines' has no python example"
  code = blocks[0]
  assert len([line for line in code.splitlines() if line.strip()]) <= 5, code
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)
  warped, images, theta = namespace["warped"], namespace["images"], namespace["theta"]
  assert warped.shape == (8, 28, 28, 1)
  # Not the identity, and the same as the two-step API.
  assert not np.allclose(warped, images)
  grid = ops.affine_grid(theta.reshape(8, 2, 3), (28, 28))
  np.testing.assert_allclose(warped, ops.sample(images, grid), rtol=1e-6, atol=1e-6)


def _stn_jax_imports():
  """{module: the stn_jax modules it imports, at the top or inside a function}, from the
  source files."""
  import ast
  import pathlib
  root = pathlib.Path(ops.__file__).parents[1]
  modules = {}
  for path in root.rglob("*.py"):
    parts = path.relative_to(root.parent).with_suffix("").parts
    modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  edges = {name: set() for name in modules}
  for name, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stn_jax"):
        for alias in node.names:
          child = f"{node.module}.{alias.name}"
          edges[name].add(child if child in modules else node.module)
      elif isinstance(node, ast.Import):
        edges[name].update(a.name for a in node.names if a.name in modules)
  return edges


def test_no_module_of_stn_jax_imports_itself_back():
  edges = _stn_jax_imports()
  assert "stn_jax.train.trainers" in edges["stn_jax.train.run"]  # the walk sees imports

  def cycle_from(start):
    stack, seen = [(start, [start])], set()
    while stack:
      name, path = stack.pop()
      for nxt in edges.get(name, ()):
        if nxt == start:
          return path + [start]
        if nxt not in seen:
          seen.add(nxt)
          stack.append((nxt, path + [nxt]))
    return None

  cycles = [c for c in map(cycle_from, sorted(edges)) if c]
  assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
