"""On-device training refuses blocks it does not model (FiLM, energy goodness, L2 norm) with
an error naming the layer, in the library and in both ``ctxconv-sim-train`` paths."""

from __future__ import annotations

import re

import pytest

from ctxconv.blockgraph.bundle import load_export
from ctxconv.ondevice.cli import main as train_main
from ctxconv.ondevice.loading import block_from_export, geometries, geometry
from ctxconv.ondevice.support import UnsupportedBlockError

#: variant -> (the block that cannot be trained, what the message names)
REFUSED = {
    "film": (1, r"a FiLM context scale \(MUL\)"),
    "energy": (1, r"an energy goodness \(MUL of the features by themselves, MEAN\)"),
    "l2": (0, r"a per-sample L2 normalisation \(L2_NORMALIZATION\)"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_library_refuses_each_variant(name, variant_export):
    bundle = load_export(variant_export(name)["export_dir"])
    index, what = REFUSED[name]
    message = rf"^block {index} \(block{index}\) cannot be trained on the device: it has {what}; "
    with pytest.raises(UnsupportedBlockError, match=message + "on-device training models"):
        geometries(bundle)
    with pytest.raises(UnsupportedBlockError, match=message):
        block_from_export(bundle, index)


def test_manifest_alone_names_an_energy_goodness(variant_export):
    manifest = load_export(variant_export("energy")["export_dir"]).manifest
    with pytest.raises(UnsupportedBlockError, match=rf"^block 1 \(block1\) .* it has "
                                                    rf"{REFUSED['energy'][1]}"):
        geometry(manifest, 1)  # its 'goodness' output: no graph needed


@pytest.mark.parametrize("name", list(REFUSED))
@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_cli_refuses_each_variant(name, weights, variant_export, capsys):
    args = [variant_export(name)["export_dir"], "--mcu", "nrf52840", "--weights", weights]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert re.search(rf"block {REFUSED[name][0]} .* cannot be trained on the device: it has "
                     rf"{REFUSED[name][1]}", err) and "Traceback" not in err
