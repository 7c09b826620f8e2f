"""MODEL_CARD.md: written and sealed with every export, its figures the export's own and its
MCU verdicts computed from the plan."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ctxconv.blockgraph.bundle import load_export


def test_card_is_sealed_and_quotes_the_exports_accuracy(digits_export):
    export = Path(digits_export["export_dir"])
    card = (export / "MODEL_CARD.md").read_text()
    assert "MODEL_CARD.md" in digits_export["files"]
    for mode in digits_export["modes"]:
        int8 = 100 * digits_export["accuracy"]["int8"][mode]
        flt = 100 * digits_export["accuracy"]["float"][mode]
        assert f"| {mode} | {flt:.2f} % | {int8:.2f} % |" in card
    blocks = digits_export["blocks"]
    assert f"MACs per image (one pass per block) {sum(b['macs'] for b in blocks):,}" in card
    assert f"one static arena of {digits_export['c']['arena_bytes']:,} bytes" in card
    assert re.search(r"\| nrf52840 \| [\d.]+ \(240\) \| [\d.]+ \(928\) \| [\d.]+ \| yes \|", card)
    assert "verification passed" in card and "training finished" in card


def test_a_profile_too_small_gets_a_computed_no(digits_export, monkeypatch):
    import ctxconv.export.model_card as mc
    from ctxconv.sim.profiles import load_profile

    bundle = load_export(digits_export["export_dir"])
    nrf = load_profile("nrf52840")
    tiny = dataclasses.replace(nrf, name="tiny", sram_bytes=nrf.reserved_sram_bytes + 1024)
    monkeypatch.setattr(mc, "list_profiles", lambda: ["nrf52840", "tiny"])
    monkeypatch.setattr(mc, "load_profile", {"nrf52840": nrf, "tiny": tiny}.get)
    card = mc.model_card(bundle.manifest, bundle.graphs, bundle.path, Path("run"))
    assert re.search(r"\| nrf52840 \|.*\| yes \|", card)
    assert re.search(r"\| tiny \| [\d.]+ \(1\) \|.*\| NO: SRAM; arena \|", card), card
