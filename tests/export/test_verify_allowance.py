"""The per-block LSB limit of export verification widens only where rounding is amplified."""

from __future__ import annotations

import pytest

from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor
from ctxconv.export.verify import lsb_allowance


def _graph(step_a: float, step_b: float, step_out: float, b_is_input: bool) -> BlockGraph:
    def t(name: str, step: float) -> Tensor:
        return Tensor(name, (1, 4), "int8", Quant.per_tensor(step, 0))

    tensors = {n: t(n, s) for n, s in
               (("x", 0.1), ("a", step_a), ("b", step_b), ("y", step_out))}
    ops = [Op("RESHAPE", ["x"], ["a"], {"shape": (1, 4)}), Op("ADD", ["a", "b"], ["y"])]
    if not b_is_input:
        ops.insert(0, Op("RESHAPE", ["x"], ["b"], {"shape": (1, 4)}))
    return BlockGraph("g", tensors, ops, ["x", "b"] if b_is_input else ["x"], ["y"])


@pytest.mark.parametrize(("step_a", "step_b", "b_is_input", "expected"), [
    (0.1, 0.1, False, 1),     # same steps: one LSB stays one LSB
    (0.25, 0.1, False, 3),    # a coarser computed input: 2.5 LSB after the add -> 3
    (0.1, 0.35, True, 1),     # a graph input is fed identically to every runtime
    (0.1, 0.35, False, 4),
])
def test_allowance_is_the_coarsest_computed_input_step_over_the_output_step(
        step_a, step_b, b_is_input, expected):
    assert lsb_allowance(_graph(step_a, step_b, 0.1, b_is_input)) == expected


def test_a_model_without_elementwise_ops_keeps_the_plain_limit(digits_run, digits_export):
    from ctxconv.blockgraph.tflite.reader import read_tflite

    paths = sorted((digits_run / "export").glob("block*.tflite"))
    assert len(paths) == len(digits_export["blocks"])
    for path in paths:
        assert lsb_allowance(read_tflite(path.read_bytes())) == 1
    rows = digits_export["agreement"]["blocks"]
    assert [row["lsb_limit"] for row in rows] == [1] * len(rows)
    assert [b["lsb_allowance"] for b in digits_export["blocks"]] == [1] * len(rows)
    assert not any("l2_output_lsb" in b for b in digits_export["blocks"])


def test_l2_levels_is_the_rms_of_a_unit_vector_at_step_one_128th():
    from ctxconv.export.verify import l2_levels

    q = Quant.per_tensor(1 / 128, 0)
    tensors = {"x": Tensor("x", (1, 784), "int8", Quant.per_tensor(0.1, 0)),
               "y": Tensor("y", (1, 784), "int8", q)}
    graph = BlockGraph("g", tensors, [Op("L2_NORMALIZATION", ["x"], ["y"])], ["x"], ["y"])
    assert l2_levels(graph) == pytest.approx(128 / 28)
    assert l2_levels(_graph(0.1, 0.1, 0.1, False)) is None
