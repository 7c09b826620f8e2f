"""On-device forward-only training, simulated in numpy (no torch).

* ``TrainableBlock`` / ``BlockGeometry``: one block in float32 (im2col conv, optional
  context bias, ReLU, avg-pool grid, FC head) with forward and backward for its own
  parameters; ``block_from_export`` / ``block_from_init`` build one.
* ``local_step``: contexts, forward, local loss (softmax CE or BCE), backward, update
  (``SGD`` with momentum, ``Adam``); ``accuracy`` by the block's goodness.
* ``FrozenPrefix``: earlier blocks run with the int8 reference kernels on the int8 export.
* ``forward_only_layout`` / ``backprop_layout``: training SRAM as buffers placed by TFLM's
  greedy planner; ``block_report`` / ``backprop_report``: SRAM, flash, largest batch,
  MACs and time per step on an MCU profile.
"""

from ctxconv.blockgraph.geometry import UPDATE_MODES, BlockGeometry, trainable_names
from ctxconv.memory.training import (
    MemoryLayout,
    NamedBuffer,
    backprop_layout,
    forward_only_layout,
    place,
)
from ctxconv.ondevice.accounting import (
    ExportModel,
    backprop_report,
    block_report,
    largest_batch,
    state_bytes_per_param,
)
from ctxconv.ondevice.block import TrainableBlock, im2col, random_params
from ctxconv.ondevice.loading import (
    block_from_export,
    block_from_init,
    geometries,
    geometry,
)
from ctxconv.ondevice.losses import OBJECTIVES, bce_pairs, softmax_ce, wrong_labels
from ctxconv.ondevice.optim import OPTIMIZERS, SGD, Adam, make_optimizer
from ctxconv.ondevice.prefix import FrozenPrefix
from ctxconv.ondevice.step import StepResult, accuracy, local_step

__all__ = [
    "OBJECTIVES", "OPTIMIZERS", "SGD", "UPDATE_MODES", "Adam", "BlockGeometry", "ExportModel",
    "FrozenPrefix", "MemoryLayout", "NamedBuffer", "StepResult", "TrainableBlock", "accuracy",
    "backprop_layout", "backprop_report", "bce_pairs", "block_from_export", "block_from_init",
    "block_report", "forward_only_layout", "geometries", "geometry", "im2col",
    "largest_batch", "local_step", "make_optimizer", "place", "random_params",
    "softmax_ce", "state_bytes_per_param", "trainable_names", "wrong_labels",
]  # fmt: skip
