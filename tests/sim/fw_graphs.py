"""Random single-op and small multi-op int8 block graphs for kernel cross-checks.

Scales are chosen so that outputs spread over the int8 range instead of saturating,
which is where rounding differences would show.
"""

from __future__ import annotations

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph, Op, Quant, Tensor


def _act(name: str, shape: tuple[int, ...], scale: float, zp: int) -> Tensor:
    return Tensor(name, shape, "int8", Quant.per_tensor(scale, zp))


def _conv_out_scale(in_scale: float, w_scales: np.ndarray, k: int, rng) -> float:
    # accumulator std ~ sqrt(k) * 70 * 60 int units; aim for ~40 output LSB std
    return float(in_scale * np.mean(w_scales) * np.sqrt(k) * 70 * 60 / 40 * rng.uniform(0.5, 2))


def conv_graph(
    seed: int,
    h: int = 9,
    w: int = 7,
    cin: int = 3,
    cout: int = 5,
    k: tuple[int, int] = (3, 3),
    stride: tuple[int, int] = (1, 1),
    padding: str = "SAME",
    relu: bool = True,
    per_channel: bool = True,
    pool: str | None = None,
    pool_filter: tuple[int, int] = (2, 2),
    pool_stride: tuple[int, int] = (2, 2),
    pool_padding: str = "VALID",
) -> BlockGraph:
    """x (1,h,w,cin) -> CONV_2D [-> MAX/AVERAGE_POOL_2D]."""
    rng = np.random.default_rng(seed)
    in_s, in_zp = float(rng.uniform(0.005, 0.1)), int(rng.integers(-128, 128))
    wq = rng.integers(-127, 128, size=(cout, *k, cin)).astype(np.int8)
    w_s = rng.uniform(0.002, 0.05, size=cout if per_channel else 1).astype(np.float32)
    kk = k[0] * k[1] * cin
    out_s = _conv_out_scale(in_s, w_s, kk, rng)
    out_zp = int(rng.integers(-60, 60))
    bias_scale = (np.float32(in_s) * w_s).astype(np.float32)
    bias = rng.integers(-2000, 2000, size=cout).astype(np.int32)
    from ctxconv.blockgraph.ir import compute_padding

    ho = compute_padding(h, k[0], stride[0], padding)[0]
    wo = compute_padding(w, k[1], stride[1], padding)[0]
    t = {
        "x": _act("x", (1, h, w, cin), in_s, in_zp),
        "w": Tensor(
            "w",
            (cout, *k, cin),
            "int8",
            Quant(w_s, np.zeros(w_s.size, np.int64), 0 if per_channel else None),
            wq,
        ),
        "b": Tensor(
            "b",
            (cout,),
            "int32",
            Quant(
                bias_scale if per_channel else bias_scale[:1],
                np.zeros(bias_scale.size, np.int64),
                0 if per_channel else None,
            ),
            bias,
        ),
        "conv": _act("conv", (1, ho, wo, cout), out_s, out_zp),
    }
    ops = [
        Op(
            "CONV_2D",
            ["x", "w", "b"],
            ["conv"],
            {"stride": stride, "padding": padding, "relu": relu},
        )
    ]
    out = "conv"
    if pool:
        po = compute_padding(ho, pool_filter[0], pool_stride[0], pool_padding)[0]
        pw = compute_padding(wo, pool_filter[1], pool_stride[1], pool_padding)[0]
        t["pool"] = _act("pool", (1, po, pw, cout), out_s, out_zp)
        ops.append(
            Op(
                pool,
                ["conv"],
                ["pool"],
                {"filter": pool_filter, "stride": pool_stride, "padding": pool_padding},
            )
        )
        out = "pool"
    return BlockGraph(f"conv{seed}", t, ops, ["x"], [out])


def fc_graph(
    seed: int,
    shape: tuple[int, ...] = (1, 2, 3, 4),
    dout: int = 6,
    relu: bool = False,
    per_channel: bool = False,
) -> BlockGraph:
    """x (shape) -> RESHAPE (1, D) -> FULLY_CONNECTED (1, dout)."""
    rng = np.random.default_rng(seed)
    din = int(np.prod(shape[1:]))
    in_s, in_zp = float(rng.uniform(0.005, 0.1)), int(rng.integers(-128, 128))
    w_s = rng.uniform(0.002, 0.05, size=dout if per_channel else 1).astype(np.float32)
    out_s = _conv_out_scale(in_s, w_s, din, rng)
    t = {
        "x": _act("x", shape, in_s, in_zp),
        "flat": _act("flat", (1, din), in_s, in_zp),
        "w": Tensor(
            "w",
            (dout, din),
            "int8",
            Quant(w_s, np.zeros(w_s.size, np.int64), 0 if per_channel else None),
            rng.integers(-127, 128, size=(dout, din)).astype(np.int8),
        ),
        "b": Tensor(
            "b",
            (dout,),
            "int32",
            Quant(
                (np.float32(in_s) * w_s).astype(np.float32),
                np.zeros(w_s.size, np.int64),
                0 if per_channel else None,
            ),
            rng.integers(-3000, 3000, size=dout).astype(np.int32),
        ),
        "y": _act("y", (1, dout), out_s, int(rng.integers(-50, 50))),
    }
    ops = [
        Op("RESHAPE", ["x"], ["flat"], {"shape": (1, din)}),
        Op("FULLY_CONNECTED", ["flat", "w", "b"], ["y"], {"relu": relu}),
    ]
    return BlockGraph(f"fc{seed}", t, ops, ["x"], ["y"])


def add_graph(
    seed: int,
    a_shape: tuple[int, ...] = (1, 5, 4, 3),
    b_shape: tuple[int, ...] = (1, 5, 4, 3),
    relu: bool = False,
    b_constant: bool = False,
    kind: str = "ADD",
) -> BlockGraph:
    """a + b (or a * b: ``kind`` MUL) with independent quantization (b broadcast over
    leading axes)."""
    rng = np.random.default_rng(seed)
    a_s, b_s = (float(v) for v in rng.uniform(0.005, 0.2, size=2))
    out_s = float(max(a_s, b_s) * rng.uniform(0.6, 2.5))
    if kind == "MUL":  # |(a - za)(b - zb)| up to 255^2: spread it over the int8 range
        out_s = float(a_s * b_s * rng.uniform(40, 200))
    b = _act("b", b_shape, b_s, int(rng.integers(-128, 128)))
    if b_constant:
        b.data = rng.integers(-128, 128, size=b_shape).astype(np.int8)
    t = {
        "a": _act("a", a_shape, a_s, int(rng.integers(-128, 128))),
        "b": b,
        "y": _act("y", a_shape, out_s, int(rng.integers(-128, 128))),
    }
    ops = [Op(kind, ["a", "b"], ["y"], {"relu": relu})]
    return BlockGraph(f"{kind.lower()}{seed}", t, ops, ["a"] if b_constant else ["a", "b"], ["y"])


def random_inputs(graph: BlockGraph, n: int, seed: int) -> dict[str, np.ndarray]:
    """Uniform int8 batches for every graph input: name -> (n, *shape[1:])."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.integers(-128, 128, size=(n, *graph.tensors[name].shape[1:])).astype(np.int8)
        for name in graph.inputs
    }


def chain_graph(
    seed: int,
    size: tuple[int, int] = (12, 12),
    cin: int = 2,
    n_blocks: int = 2,
    max_channels: int = 16,
    context: bool = False,
    head: bool = True,
) -> BlockGraph:
    """A random chain of conv / pool / add blocks with an optional FC head.

    Each block: CONV_2D (random k, stride, padding, relu) [+ ADD of a constant or of a
    ``context`` (1,1,1,C) graph input] [+ MAX/AVERAGE_POOL_2D]; then RESHAPE + FC.
    """
    rng = np.random.default_rng(seed)
    t: dict[str, Tensor] = {}
    ops: list[Op] = []
    from ctxconv.blockgraph.ir import compute_padding

    h, w, c = size[0], size[1], cin
    s, zp = float(rng.uniform(0.01, 0.1)), int(rng.integers(-100, 100))
    t["x"] = _act("x", (1, h, w, c), s, zp)
    cur, inputs = "x", ["x"]
    for i in range(n_blocks):
        cout = int(rng.integers(1, max_channels + 1))
        k = int(rng.choice([1, 3, 5])) if min(h, w) >= 5 else 1
        stride = int(rng.integers(1, 3)) if min(h, w) >= 4 else 1
        pad = str(rng.choice(["SAME", "VALID"]))
        ho, wo = (compute_padding(d, k, stride, pad)[0] for d in (h, w))
        w_s = rng.uniform(0.002, 0.05, size=cout).astype(np.float32)
        out_s = _conv_out_scale(s, w_s, k * k * c, rng)
        out_zp = int(rng.integers(-60, 60))
        t[f"w{i}"] = Tensor(
            f"w{i}",
            (cout, k, k, c),
            "int8",
            Quant(w_s, np.zeros(cout, np.int64), 0),
            rng.integers(-127, 128, size=(cout, k, k, c)).astype(np.int8),
        )
        t[f"b{i}"] = Tensor(
            f"b{i}",
            (cout,),
            "int32",
            Quant((np.float32(s) * w_s).astype(np.float32), np.zeros(cout, np.int64), 0),
            rng.integers(-2000, 2000, size=cout).astype(np.int32),
        )
        conv = f"conv{i}"
        t[conv] = _act(conv, (1, ho, wo, cout), out_s, out_zp)
        ops.append(
            Op(
                "CONV_2D",
                [cur, f"w{i}", f"b{i}"],
                [conv],
                {"stride": (stride, stride), "padding": pad, "relu": bool(rng.integers(0, 2))},
            )
        )
        cur, h, w, c, s, zp = conv, ho, wo, cout, out_s, out_zp
        if context or rng.random() < 0.3:
            other = f"ctx{i}"
            t[other] = _act(
                other, (1, 1, 1, c), float(rng.uniform(0.01, 0.1)), int(rng.integers(-50, 50))
            )
            if context:
                inputs.append(other)
            else:
                t[other].data = rng.integers(-128, 128, size=(1, 1, 1, c)).astype(np.int8)
            s = float(max(s, t[other].quant.scale[0]) * rng.uniform(0.8, 2.0))
            zp = int(rng.integers(-50, 50))
            t[f"add{i}"] = _act(f"add{i}", (1, h, w, c), s, zp)
            ops.append(Op("ADD", [cur, other], [f"add{i}"], {"relu": bool(rng.integers(0, 2))}))
            cur = f"add{i}"
        if min(h, w) >= 2 and rng.random() < 0.7:
            kind = str(rng.choice(["MAX_POOL_2D", "AVERAGE_POOL_2D"]))
            ph, pw = (compute_padding(d, 2, 2, "VALID")[0] for d in (h, w))
            t[f"pool{i}"] = _act(f"pool{i}", (1, ph, pw, c), s, zp)
            ops.append(
                Op(
                    kind,
                    [cur],
                    [f"pool{i}"],
                    {"filter": (2, 2), "stride": (2, 2), "padding": "VALID"},
                )
            )
            cur, h, w = f"pool{i}", ph, pw
    if head:
        n = h * w * c
        t["flat"] = _act("flat", (1, n), s, zp)
        ops.append(Op("RESHAPE", [cur], ["flat"], {"shape": (1, n)}))
        dout = int(rng.integers(2, 11))
        w_s = rng.uniform(0.002, 0.05, size=1).astype(np.float32)
        t["fc_w"] = Tensor(
            "fc_w",
            (dout, n),
            "int8",
            Quant(w_s, np.zeros(1, np.int64)),
            rng.integers(-127, 128, size=(dout, n)).astype(np.int8),
        )
        t["fc_b"] = Tensor(
            "fc_b",
            (dout,),
            "int32",
            Quant((np.float32(s) * w_s).astype(np.float32), np.zeros(1, np.int64)),
            rng.integers(-3000, 3000, size=dout).astype(np.int32),
        )
        t["logits"] = _act("logits", (1, dout), _conv_out_scale(s, w_s, n, rng), 0)
        ops.append(Op("FULLY_CONNECTED", ["flat", "fc_w", "fc_b"], ["logits"], {"relu": False}))
        cur = "logits"
    return BlockGraph(f"chain{seed}", t, ops, inputs, [cur])


def _fc_into(t: dict, ops: list, seed: int, src: str, dout: int, out: str, relu: bool) -> None:
    """Append src (1, D) -> FULLY_CONNECTED (1, dout) named ``out`` (per-tensor weights)."""
    rng = np.random.default_rng(seed)
    x = t[src]
    in_s = float(x.quant.scale[0])
    din = x.shape[1]
    w_s = np.array([rng.uniform(0.002, 0.05)], np.float32)
    t[f"{out}_w"] = Tensor(f"{out}_w", (dout, din), "int8", Quant(w_s, np.zeros(1, np.int64)),
                           rng.integers(-127, 128, size=(dout, din)).astype(np.int8))
    t[f"{out}_b"] = Tensor(f"{out}_b", (dout,), "int32",
                           Quant((np.float32(in_s) * w_s).astype(np.float32),
                                 np.zeros(1, np.int64)),
                           rng.integers(-500, 500, size=dout).astype(np.int32))
    t[out] = _act(out, (1, dout), _conv_out_scale(in_s, w_s, din, rng), int(rng.integers(-60, 60)))
    ops.append(Op("FULLY_CONNECTED", [src, f"{out}_w", f"{out}_b"], [out], {"relu": relu}))


def variant_graph(kind: str, seed: int, h: int = 8, w: int = 8, cin: int = 4, cout: int = 8,
                  k: int = 10, pool_first: bool = False) -> BlockGraph:
    """A block of one exported variant, as the exporter lays it out.

    film: conv -> MUL by a context scale (FC(context) -> RESHAPE (1,1,1,cout)), ReLU;
    energy: conv -> MUL by itself -> RESHAPE (1, N) -> MEAN keep_dims = ``goodness`` (1, 1);
    l2: RESHAPE (1, N) -> L2_NORMALIZATION -> RESHAPE -> conv.
    ``pool_first`` (energy): a 2x2 MAX_POOL_2D of a (2h, 2w) input before the conv, as in
    a later block of the Fashion-MNIST model.
    """
    rng = np.random.default_rng(seed + 1000)
    n = h * w * cout
    if kind == "l2":
        g = conv_graph(seed, h=h, w=w, cin=cin, cout=cout)
        x = g.tensors["x"]
        t = {"x": x, "flat": _act("flat", (1, h * w * cin), float(x.quant.scale[0]),
                                  int(x.quant.zero_point[0])),
             "unit": _act("unit", (1, h * w * cin), 1 / 128, 0),
             "unit4": _act("unit4", (1, h, w, cin), 1 / 128, 0)}
        ops = [Op("RESHAPE", ["x"], ["flat"], {"shape": (1, h * w * cin)}),
               Op("L2_NORMALIZATION", ["flat"], ["unit"], {}),
               Op("RESHAPE", ["unit"], ["unit4"], {"shape": (1, h, w, cin)})]
        conv = g.ops[0]
        t |= {name: g.tensors[name] for name in conv.inputs[1:] + conv.outputs}
        wq, b = t["w"].quant, t["b"]  # the conv now reads scale 1/128
        t["b"] = Tensor("b", b.shape, "int32", Quant((wq.scale / 128).astype(np.float32),
                                                     wq.zero_point, wq.axis), b.data)
        ops.append(Op("CONV_2D", ["unit4", *conv.inputs[1:]], conv.outputs, conv.options))
        return BlockGraph(f"l2_{seed}", t, ops, ["x"], ["conv"])
    g = conv_graph(seed, h=h, w=w, cin=cin, cout=cout, relu=kind != "film")
    t, ops = dict(g.tensors), list(g.ops)
    s = float(t["conv"].quant.scale[0])
    if kind == "film":
        t["context"] = _act("context", (1, k), 1 / 255, -128)
        _fc_into(t, ops, seed, "context", cout, "scale", relu=False)
        sq = t["scale"].quant
        t["scale4"] = Tensor("scale4", (1, 1, 1, cout), "int8", sq)
        ops.append(Op("RESHAPE", ["scale"], ["scale4"], {"shape": (1, 1, 1, cout)}))
        out_s = s * float(sq.scale[0]) * 60 * rng.uniform(0.5, 2)
        t["features"] = _act("features", (1, h, w, cout), out_s, -128)
        ops.append(Op("MUL", ["conv", "scale4"], ["features"], {"relu": True}))
        return BlockGraph(f"film{seed}", t, ops, ["x", "context"], ["features"])
    if kind != "energy":
        raise ValueError(f"unknown variant {kind!r}")
    t["squares"] = _act("squares", (1, h, w, cout), s * s * 255 / 4, -128)
    t["flat"] = _act("flat", (1, n), s * s * 255 / 4, -128)
    t["goodness"] = _act("goodness", (1, 1), s * s * 255 / 40, -128)
    ops += [Op("MUL", ["conv", "conv"], ["squares"], {"relu": False}),
            Op("RESHAPE", ["squares"], ["flat"], {"shape": (1, n)}),
            Op("MEAN", ["flat"], ["goodness"], {"axes": (1,), "keep_dims": True})]
    if not pool_first:
        return BlockGraph(f"energy{seed}", t, ops, ["x"], ["conv", "goodness"])
    xq = t["x"].quant
    t["x_in"] = _act("x_in", (1, 2 * h, 2 * w, cin), float(xq.scale[0]), int(xq.zero_point[0]))
    ops.insert(0, Op("MAX_POOL_2D", ["x_in"], ["x"],
                     {"filter": (2, 2), "stride": (2, 2), "padding": "VALID"}))
    return BlockGraph(f"energy{seed}_pooled", t, ops, ["x_in"], ["conv", "goodness"])


def mean_graph(seed: int, shape: tuple[int, ...] = (1, 4, 4, 6), axes: tuple[int, ...] = (1, 2, 3),
               keep_dims: bool = False) -> BlockGraph:
    """x -> MEAN over trailing ``axes`` (int8, its own output quantization)."""
    rng = np.random.default_rng(seed)
    in_s = float(rng.uniform(0.005, 0.1))
    out = [1 if i in axes else d for i, d in enumerate(shape)] if keep_dims else [
        d for i, d in enumerate(shape) if i not in axes]
    t = {"x": _act("x", shape, in_s, int(rng.integers(-128, 128))),
         "y": _act("y", tuple(out), in_s * float(rng.uniform(0.05, 0.3)),
                   int(rng.integers(-60, 60)))}
    ops = [Op("MEAN", ["x"], ["y"], {"axes": axes, "keep_dims": keep_dims})]
    return BlockGraph(f"mean{seed}", t, ops, ["x"], ["y"])
