"""Firmware simulator: run and size int8 block models the way TFLite Micro would.

Torch-free by design (a firmware engineer installs only this side). It reads an export
directory through the shared block-graph format, ``ctxconv.blockgraph``: the IR, the one
validating .tflite reader (``read_tflite``, re-exported here: .tflite bytes ->
``BlockGraph``, damage -> ModelFileError) and the manifest schema.

* ``bundle.load_export``: an export directory, checked (manifest, sha256, every .tflite)
* ``kernels`` / ``interpreter``: batched numpy kernels bit-exact with TFLM's reference
  kernels, and ``run_graph`` to execute a block on a batch
* ``profiles``: MCU profiles (packaged YAML + ``CTXCONV_MCU_DIR``)
* ``planner``: arena / flash plans per block and per pipeline, ``DoesNotFitError``
"""

from ctxconv.blockgraph.tflite_reader import read_tflite
from ctxconv.firmware_sim.interpreter import compile_graph, run_graph
from ctxconv.firmware_sim.planner import (
    DoesNotFitError,
    MemoryPlan,
    PipelinePlan,
    plan_block,
    plan_pipeline,
)
from ctxconv.firmware_sim.profiles import McuProfile, list_profiles, load_profile

__all__ = [
    "DoesNotFitError",
    "McuProfile",
    "MemoryPlan",
    "PipelinePlan",
    "compile_graph",
    "list_profiles",
    "load_profile",
    "plan_block",
    "plan_pipeline",
    "read_tflite",
    "run_graph",
]
