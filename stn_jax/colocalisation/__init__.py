"""Co-localisation (supplementary section 1.2): an attention transformer learns, without
labels or boxes, to put a box on the digit common to a set of images of one class.

Its rooms: ``task`` (the registered task, its settings and its data), ``encoder`` (the
frozen e() of eq. (1)), ``loss`` (eq. (1) and its random crops), ``boxes`` (boxes from
transformer parameters, IoU, pictures), ``search`` (eq. (1) minimised over a grid of
boxes), ``searcher`` (the search run on a co-localisation set) and ``trainer`` (the
registered trainer: the paper's SGD through the one loop, or the search).
"""

from stn_jax.colocalisation.boxes import (IOU_THRESHOLD, box_from_theta, box_iou, draw_boxes,
                                          theta_from_box)
from stn_jax.colocalisation.encoder import descriptor_part, encoder_from_run
from stn_jax.colocalisation.loss import random_crops, same_scale_crops, sample_pairs, triplet_hinge
from stn_jax.colocalisation.searcher import rounds_picture
from stn_jax.colocalisation.task import DESCRIPTOR_LAYERS, Colocalisation, dataset
from stn_jax.colocalisation.trainer import train_colocalisation

__all__ = ["DESCRIPTOR_LAYERS", "IOU_THRESHOLD", "Colocalisation", "box_from_theta", "box_iou",
           "dataset", "descriptor_part", "draw_boxes", "encoder_from_run", "random_crops",
           "rounds_picture", "same_scale_crops", "sample_pairs", "theta_from_box",
           "train_colocalisation", "triplet_hinge"]
