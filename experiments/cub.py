"""CUB-200-2011 birds (paper section 4.3, supplement 1.5): BN-Inception with 0, 2 or 4 STs.

Prepare the data once (it needs CUB_200_2011.tgz in DIR), then train:

  python -m stn_jax.datasets.prepare cub --manual_dir=DIR
  python -m stn_jax.main --config=experiments/cub.py:4xst,448 --workdir=runs/cub_4xst_448 \
      --config.pretrained=bn_inception.npz
  python -m stn_jax.main --config=experiments/cub.py:cnn,224 --workdir=runs/cub_cnn_224

Models: cnn (cub_cnn), 2xst (2xst_cnn), 4xst (4xst_cnn). Resolutions: 224, 448
(default: 224 for cnn, 448 for the ST models); the paper's runs are cnn,224,
2xst,224, 2xst,448 and 4xst,448. Add ``smoke`` for a few steps of a network 1/16
wide on a few images (what the tests run), e.g. ``:cnn,smoke``.

The paper starts from ImageNet weights, which cannot be downloaded here:
``--config.pretrained=FILE.npz`` (format in stn_jax/models/inception_bn.py) loads
them into every backbone, with ``--config.data.*`` normalisation matching them
(see stn_jax/train/cub_task.py). Without it the networks start from random
initialisation, the log warns, and results.json records ``"pretrained": null``.

Supplement 1.5 gives the architecture, the crops and the 10-crop evaluation, but
none of the optimisation settings ("estimated by cross-validation on the
training set"). The choices below, and why, are in docs/paper_notes.md ("CUB
training"): SGD with momentum 0.9, batch 32, 0.01 divided by ten every 4k steps,
10k steps (about 59 epochs), weight decay 0.0005, localisation net at a tenth of
the base rate, 600 training images held out for validation. Data come from
``--config.data.data_dir`` (default: $STN_TFDS_DIR, then data/tfds); a run on
unprepared data stops, before compiling, with the command that prepares it.
"""

from ml_collections import config_dict

from stn_jax.train.config import base_config, parse_variant

MODELS = {"cnn": "cub_cnn", "2xst": "2xst_cnn", "4xst": "4xst_cnn"}
CHOICES = {"model": tuple(MODELS), "resolution": ("224", "448"), "smoke": (True,)}
DEFAULTS = {"model": "4xst", "resolution": None, "smoke": False}


def get_config(arg=None):
  v = parse_variant(arg, CHOICES, DEFAULTS)
  c = base_config()
  c.task = "cub"
  c.model = MODELS[v["model"]]
  size = v["resolution"] or ("224" if v["model"] == "cnn" or v["smoke"] else "448")
  c.model_kwargs.input_size = int(size)
  c.pretrained = config_dict.placeholder(str)  # a BN-Inception .npz; None: random init

  c.data.data_dir = config_dict.placeholder(str)  # None: $STN_TFDS_DIR, then data/tfds
  c.data.num_validation = 600  # held out from the 5994 train images (seeded)
  c.data.split_seed = 0
  c.data.num_train = config_dict.placeholder(int)  # None: every image not held out
  c.data.num_eval = config_dict.placeholder(int)  # None: the whole validation/test sets
  c.data.pad = False  # True: the other reading of "256 x S" (longest side, zero-padded)
  # The network's input: (x * pixel_scale - mean) / std, x the RGB pixels in [0, 1]
  # (channels reversed first if bgr). Set these to what pretrained weights expect.
  c.data.pixel_scale = 1.0
  c.data.mean = (0.0, 0.0, 0.0)
  c.data.std = (1.0, 1.0, 1.0)
  c.data.bgr = False
  c.data.read_threads = 8  # host threads decoding and cropping JPEGs

  c.batch_size = 32
  c.eval_batch_size = 16  # images, each of 10 crops
  c.num_steps = 10_000
  c.learning_rate = 0.01
  c.decay_every = 4_000
  c.decay_factor = 0.1
  c.momentum = 0.9
  c.weight_decay = 0.0005
  # Only the ST models have a localisation net (the optimiser refuses a multiplier
  # that would apply to nothing).
  c.localization_lr_multiplier = 1.0 if v["model"] == "cnn" else 0.1
  c.log_every = 50
  c.eval_every = 1_000
  c.checkpoint_every = 1_000
  if v["smoke"]:
    smoke(c)
  c.lock()
  return c


def smoke(c):
  """A few steps of a 1/16-wide network on a few images: seconds per step on a CPU.

  224 is the smallest input the CUB networks take (their crops are 224x224).
  """
  c.model_kwargs.width = 1 / 16
  c.data.num_validation = 2
  c.data.num_train = 8
  c.data.num_eval = 4
  c.data.read_threads = 2
  c.batch_size = 2
  c.eval_batch_size = 2
  c.num_steps = 4
  c.decay_every = 2
  c.log_every = 2
  c.eval_every = 2
  c.checkpoint_every = 2
  c.pictures = 2
