"""The op registry: each op module names its kinds and the options each reads, once."""

import copy

import pytest
from graph_factory import tiny_block_graph

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import Op
from ctxconv.blockgraph.tflite.writer import write_tflite


def test_supported_is_the_union_of_the_modules_kinds():
    kinds = [k for m in ops.MODULES for k in m.KINDS]
    assert len(kinds) == len(set(kinds))  # one home per op kind
    assert ops.SUPPORTED == tuple(sorted(kinds))
    for m in ops.MODULES:
        assert all(isinstance(o, str) for opts in m.KINDS.values() for o in opts), m.__name__


def test_an_unknown_op_is_refused_by_name():
    g = copy.deepcopy(tiny_block_graph(seed=0))
    g.ops.append(Op("SOFTMAX", [g.ops[-1].outputs[0]], [g.ops[-1].outputs[0]]))
    with pytest.raises(ValueError, match="op 'SOFTMAX' is not supported"):
        ops.validate_structure(g)


def test_a_missing_option_is_named():
    g = copy.deepcopy(tiny_block_graph(seed=0))
    conv = next(op for op in g.ops if op.kind == "CONV_2D")
    del conv.options["stride"]
    with pytest.raises(ValueError, match=r"CONV_2D lacks options \['stride'\]"):
        ops.validate_graph(g)
    with pytest.raises(ValueError, match="lacks options"):
        write_tflite(g)
