"""Bad command lines end in one ``error:`` line, a non-zero exit and nothing written.

Each category runs at least one real ``python -m stn_jax.main`` (or ``stn_jax.seeds``)
in a subprocess; where a check is a pure function, its other cases are tested here
directly, which costs no JAX start-up.
"""

import os
import pathlib
import shutil
import socket

import ml_collections
import pytest

from experiment_configs import configure, load_config
from stn_jax import seeds as seeds_lib
from stn_jax.datasets import mnist
from stn_jax.errors import ConfigError, DataError, RunStopped
from stn_jax.train import validate
from cli_helpers import REPO, SMOKE, error_line, run
from mnist_files import idx_bytes, make_split


def snapshot(folder):
  return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


# ------------------------------------------------------------------------ config files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("configs")
  (d / "notes.txt").write_text("Some notes about the run, not a config.\n")
  (d / "broken.py").write_text("def get_config(:\n  return None\n")
  (d / "no_get_config.py").write_text("X = 1\n")
  (d / "buggy.py").write_text("def get_config(arg=None):\n  return undefined_name\n")
  return d


@pytest.mark.parametrize("config,words", [
    ("experiments/nope.py", ["'experiments/nope.py' does not exist",
                             "experiments/distorted_mnist.py"]),
    ("{files}/notes.txt", ["notes.txt' is not Python", "(line 1)"]),
    ("{files}/broken.py", ["broken.py' is not Python", "(line 1)"]),
    ("{files}/no_get_config.py", ["defines no get_config()"]),
    ("experiments/distorted_mnist.py:rst,st_cnn", ["Unknown variant 'rst'",
                                                   "distortion: r, rts, p, e, tc, plain"]),
    ("experiments/distorted_mnist.py:rts,r,st_cnn", ["names the distortion twice"]),
    ("experiments/distorted_mnist.py:rts,cnn,tps", ["applies to st_fcn and st_cnn only"]),
], ids=["missing", "text", "syntax", "no_get_config", "unknown_variant", "group_twice",
        "get_config_refuses"])
def test_config_file_problems(config, words, bad_files, tmp_path):
  out = run(f"--config={config.format(files=bad_files)}", f"--workdir={tmp_path / 'w'}")
  error_line(out, *words)
  assert not (tmp_path / "w").exists()


def test_a_bad_flag_value_is_one_line(tmp_path):
  out = run(SMOKE, "--config.batch_size=abc", f"--workdir={tmp_path / 'w'}")
  error_line(out, "--config.batch_size=abc", "invalid literal for int()")
  assert not (tmp_path / "w").exists()


def test_a_bug_in_a_config_file_keeps_its_traceback(bad_files, tmp_path):
  out = run(f"--config={bad_files}/buggy.py", f"--workdir={tmp_path / 'w'}")
  assert out.returncode != 0
  assert "Traceback" in out.stderr and "NameError" in out.stderr
  assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------ config values


@pytest.mark.parametrize("override,words", [
    ("--config.batch_size=0", ["batch_size must be at least 1", "got 0"]),
    ("--config.num_steps=-1", ["num_steps must be at least 1", "got -1"]),
    ("--config.data.num_eval=0", ["data.num_eval must be at least 1", "got 0"]),
    ("--config.data.num_train=0", ["data.num_train must be at least 1", "got 0"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_values_stop_before_anything_is_written(override, words, mnist_dir, tmp_path):
  out = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}", override,
            f"--workdir={tmp_path / 'w'}")
  error_line(out, *words, override.split("=")[0])
  assert not (tmp_path / "w").exists()


def test_keep_checkpoints_zero_leaves_an_existing_workdir_as_it_was(mnist_dir, tmp_path):
  (tmp_path / "w").mkdir()
  out = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}", "--config.keep_checkpoints=0",
            f"--workdir={tmp_path / 'w'}")
  error_line(out, "keep_checkpoints must be at least 1", "resume")
  assert snapshot(tmp_path) == ["w"]


def test_a_batch_the_devices_cannot_share(mnist_dir, tmp_path):
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
  out = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}", "--config.batch_size=15",
            f"--workdir={tmp_path / 'w'}", env={"XLA_FLAGS": flags})
  error_line(out, "batch_size (15) must be divisible by the number of devices (2)")
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("override,words", [
    ("--config.model=nope", ["Unknown model 'nope'", "st_cnn", "--config.model"]),
    ("--config.data.distortion=XX", ["Unknown distortion 'XX'", "RTS"]),
], ids=["model", "distortion"])
def test_unknown_names_list_the_known_ones(override, words, mnist_dir, tmp_path):
  out = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}", override,
            f"--workdir={tmp_path / 'w'}")
  error_line(out, *words)
  assert not (tmp_path / "w").exists()


def test_colocalisation_settings(mnist_dir, tmp_path):
  out = run("--config=experiments/colocalisation.py:t,8,smoke",
            f"--config.data.mnist_dir={mnist_dir}", "--config.data.digit_class=12",
            f"--workdir={tmp_path / 'w'}")
  error_line(out, "data.digit_class must be a digit class 0-9, got 12")
  assert not (tmp_path / "w").exists()


@pytest.fixture
def smoke(mnist_dir):
  return configure("distorted_mnist", "rts,st_cnn,smoke", **{"data.mnist_dir": str(mnist_dir)})


@pytest.mark.parametrize("field,value,words", [
    ("batch_size", -4, ["batch_size must be at least 1", "got -4"]),
    ("eval_batch_size", 0, ["eval_batch_size must be at least 1"]),
    ("num_steps", 0, ["num_steps must be at least 1"]),
    ("log_every", 0, ["log_every must be at least 1"]),
    ("eval_every", -5, ["eval_every must be at least 1"]),
    ("checkpoint_every", 0, ["checkpoint_every must be at least 1"]),
    ("keep_checkpoints", 0, ["keep_checkpoints must be at least 1"]),
    ("decay_every", 0, ["decay_every must be at least 1"]),
    ("data.num_validation", 0, ["data.num_validation must be at least 1"]),
    ("data.num_train", 8, ["data.num_train (8) holds fewer training examples than one batch"]),
    ("data.source", "hub", ["data.source must be one of auto, idx, tfds"]),
    ("learning_rate", float("nan"), ["learning_rate must be a positive finite number"]),
    ("momentum", 1.0, ["momentum must be in [0, 1)"]),
    ("weight_decay", -0.1, ["weight_decay must be a finite number >= 0"]),
    ("seed", -1, ["seed must be an integer in [0, 2**32)"]),
    ("init_from", "/no/such/run", ["init_from='/no/such/run' is not a checkpoint"]),
])
def test_check_config_names_the_field(smoke, field, value, words):
  validate.check_config(smoke, num_devices=1)  # the unchanged config passes
  c = configure("distorted_mnist", "rts,st_cnn,smoke", **{field: value})
  with pytest.raises(ConfigError) as info:
    validate.check_config(c, num_devices=1)
  for word in words:
    assert word in str(info.value)
  assert f"--config.{field}" in str(info.value)


def test_check_config_divides_both_batches_over_the_devices(smoke):
  validate.check_config(smoke, num_devices=2)
  c = configure("distorted_mnist", "rts,st_cnn,smoke", eval_batch_size=15)
  with pytest.raises(ConfigError, match=r"eval_batch_size \(15\) must be divisible by the "
                     r"number of devices \(2\).*e\.g\. 14"):
    validate.check_config(c, num_devices=2)
  validate.check_config(c, num_devices=1)
  # MNIST addition draws two digits a pair: the training subset must hold a batch of pairs.
  pairs = configure("mnist_addition", "smoke", **{"data.num_train": 20})
  with pytest.raises(ConfigError, match="pairs of digits"):
    validate.check_config(pairs)


def test_check_config_looks_into_the_colocalisation_encoder():
  c = load_config("colocalisation", "t,8,smoke")
  validate.check_config(c, num_devices=2)
  with c.unlocked():
    c.encoder.eval_batch_size = 0
  with pytest.raises(ConfigError, match=r"encoder's config.*eval_batch_size must be at least 1"
                     r".*--config\.encoder\.eval_batch_size"):
    validate.check_config(c)
  with c.unlocked():
    c.encoder_from = str(REPO)  # a trained encoder is used as it is: its config is not read
  validate.check_config(c)


# ------------------------------------------------------------------------ workdir


def test_a_workdir_that_is_a_file(mnist_dir, tmp_path):
  (tmp_path / "afile").write_text("keep me")
  out = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}", f"--workdir={tmp_path / 'afile'}")
  error_line(out, "is a file, not a directory", "--workdir")
  assert snapshot(tmp_path) == ["afile"] and (tmp_path / "afile").read_text() == "keep me"


def test_a_workdir_inside_a_file(mnist_dir, tmp_path):
  (tmp_path / "afile").write_text("keep me")
  out = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}",
            f"--workdir={tmp_path / 'afile' / 'run'}")
  error_line(out, "cannot be made", "afile' is a file")
  assert snapshot(tmp_path) == ["afile"]


def test_check_workdir(tmp_path, monkeypatch):
  validate.check_workdir(tmp_path)  # exists: a run there resumes
  validate.check_workdir(tmp_path / "new" / "deeper")  # made on start
  validate.check_workdir("gs://bucket/run")  # left to the remote file system
  for empty in ("", "  "):
    with pytest.raises(ConfigError, match="The workdir is empty"):
      validate.check_workdir(empty)
  monkeypatch.setattr(os, "access", lambda path, mode: False)
  with pytest.raises(ConfigError, match="is not writable"):
    validate.check_workdir(tmp_path / "new")
  assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------ MNIST files


def _damaged(mnist_dir, tmp_path, how):
  d = tmp_path / "mnist"
  shutil.copytree(mnist_dir, d)
  images = d / "train-images-idx3-ubyte.gz"
  if how == "truncated":
    images.write_bytes(images.read_bytes()[:100])
  elif how == "magic":
    import gzip  # pylint: disable=import-outside-toplevel
    images.write_bytes(gzip.compress(idx_bytes(make_split(256)[0], magic=1234)))
  elif how == "counts":
    import gzip  # pylint: disable=import-outside-toplevel
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(make_split(200)[1])))
  elif how == "missing":
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
  return d


@pytest.mark.parametrize("how,words", [
    ("truncated", ["train-images-idx3-ubyte.gz is not a valid gzip file", "Replace it"]),
    ("magic", ["has magic number 1234", "not an MNIST images IDX file"]),
    ("counts", ["holds 256 images but", "holds 200 labels"]),
    ("missing", ["not its labels file t10k-labels-idx1-ubyte", "STN_MNIST_DIR"]),
])
def test_damaged_mnist_files(how, words, mnist_dir, tmp_path):
  data = _damaged(mnist_dir, tmp_path, how)
  out = run(SMOKE, f"--config.data.mnist_dir={data}", f"--workdir={tmp_path / 'w'}")
  error_line(out, *words)
  assert not (tmp_path / "w").exists()


def test_mnist_errors_are_data_errors_and_keep_their_old_classes(mnist_dir, tmp_path):
  with pytest.raises(DataError) as info:
    mnist.load_mnist("train", _damaged(mnist_dir, tmp_path / "a", "counts"))
  assert isinstance(info.value, ValueError)
  with pytest.raises(mnist.MnistNotFoundError) as info:
    mnist.load_mnist("test", _damaged(mnist_dir, tmp_path / "b", "missing"))
  assert isinstance(info.value, DataError) and isinstance(info.value, FileNotFoundError)


# ------------------------------------------------------------------------ TFDS offline


def test_tfds_without_network_fails_in_seconds_and_writes_nothing(tmp_path):
  with socket.socket() as s:  # a proxy port nothing listens on: refused at once, net or not
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "https_proxy": "", "NO_PROXY": "",
         "no_proxy": ""}
  out = run(SMOKE, "--config.data.source=tfds", f"--config.data.mnist_dir={tmp_path / 'tfds'}",
            f"--workdir={tmp_path / 'w'}", env=env)
  error_line(out, "not prepared under", "TFDS could not download MNIST", "STN_MNIST_DIR")
  assert snapshot(tmp_path) == []  # neither the workdir nor TFDS's .tmp folders


def test_the_default_source_without_mnist_or_network_fails_in_seconds(tmp_path):
  # No MNIST named and none in data/mnist: the default source ('auto') downloads through
  # TFDS, and without a network that ends in one sentence that says what to do.
  assert not (REPO / "data" / "mnist").exists()
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "https_proxy": "", "NO_PROXY": "",
         "no_proxy": "", "STN_MNIST_DIR": "", "STN_TFDS_DIR": str(tmp_path / "tfds")}
  out = run(SMOKE, f"--workdir={tmp_path / 'w'}", env=env)
  error_line(out, "TFDS could not download MNIST", "STN_MNIST_DIR", "--config.data.mnist_dir")
  assert snapshot(tmp_path) == []


# ------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("given,words", [
    ("0,0", ["seeds must be distinct", "0 appears more than once"]),
    ("a,1", ["The seed 'a'", "not an integer"]),
    ("", ["No seed was given"]),
], ids=["repeated", "not_integer", "empty"])
def test_bad_seeds(given, words, mnist_dir, tmp_path):
  out = run(SMOKE, f"--config.data.mnist_dir={mnist_dir}", f"--seeds={given}",
            f"--workdir={tmp_path / 'w'}", module="stn_jax.seeds")
  error_line(out, *words)
  assert not (tmp_path / "w").exists()


def test_parse_seeds():
  assert seeds_lib.parse_seeds(["3", " 1", 2]) == [3, 1, 2]
  for bad, match in ((["1", "2", "1"], "distinct"), (["-1"], r"outside \[0, 2\*\*32\)"),
                     ([], "No seed"), (["1.5"], "not an integer")):
    with pytest.raises(ConfigError, match=match):
      seeds_lib.parse_seeds(bad)


# ------------------------------------------------------------------------ how main reports


def test_main_reports_user_errors_with_their_exit_code_and_bugs_with_a_traceback(capsys):
  from stn_jax import cli  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as info:
    with cli.user_errors():
      raise RunStopped("Stopped by SIGTERM at step 7;\n  run the same command to resume.",
                       step=7, signum=15)
  assert info.value.code == 143  # a stop is no error: its sentence alone, on one line
  assert capsys.readouterr().err == ("Stopped by SIGTERM at step 7; run the same command to "
                                     "resume.\n")
  with pytest.raises(SystemExit) as info:
    with cli.user_errors():
      raise ConfigError("A setting\n  cannot work.")
  assert info.value.code == 1
  assert capsys.readouterr().err == "error: A setting cannot work.\n"
  with pytest.raises(SystemExit) as info:
    with cli.user_errors():
      raise FileNotFoundError("No such file: x.")
  assert info.value.code == 1
  with pytest.raises(RuntimeError, match="a bug"):
    with cli.user_errors():
      raise RuntimeError("a bug")
  with pytest.raises(ValueError, match="not ours"):  # a plain ValueError is no user error
    with cli.user_errors():
      raise ValueError("not ours")


def test_check_config_reads_nothing_but_the_config():
  # No JAX, no data: a bare ConfigDict with the fields of another task passes.
  validate.check_config(ml_collections.ConfigDict({"task": "anything", "batch_size": 3}),
                        num_devices=3)
