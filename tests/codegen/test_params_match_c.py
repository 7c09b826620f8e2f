"""Each op's int8 Params dataclass and the C struct its kernel reads have the same fields."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ops.base import c_fields


def c_structs(text: str) -> dict[str, list[str]]:
    """``typedef struct { ... } name;`` of a C header -> its field names, in order."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out = {}
    for body, name in re.findall(r"typedef\s+struct\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
        fields = []
        for decl in body.split(";"):
            decl = decl.strip()
            if not decl:
                continue
            # "const int8_t *weights" or "int32_t in_h, in_w, in_c": the type, then names
            head, *rest = decl.split(",")
            first = re.search(r"\**\s*(\w+)\s*(\[[^\]]*\])?$", head.strip())
            assert first is not None, decl
            fields.append(first.group(1))
            fields += [re.sub(r"[\s*]|\[.*\]", "", r) for r in rest]
        out[name] = fields
    return out


HEADER = (resources.files("ctxconv.codegen") / "runtime" / "ctxconv_kernels.h").read_text()
STRUCTS = c_structs(HEADER)
PARAMS = ops.params_types()


def test_the_parser_reads_the_header():
    assert STRUCTS["ctxconv_conv_params"][:3] == ["in_h", "in_w", "in_c"]
    assert STRUCTS["ctxconv_conv_params"][-4:] == ["weights", "bias", "mult", "shift"]
    assert {p.C_STRUCT for p in PARAMS} <= set(STRUCTS)


def test_every_c_op_has_params():
    kernels = {kind for kind, m in ops.REGISTRY.items() if hasattr(m, "C_FUNCTIONS")}
    assert kernels == {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "ADD",
                       "MUL", "MEAN", "L2_NORMALIZATION"}
    assert len(PARAMS) == 7  # the two pools share one struct


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.__name__)
def test_params_fields_equal_the_c_struct(params):
    assert c_fields(params) == STRUCTS[params.C_STRUCT]
