"""MCU profiles: packaged YAML through importlib.resources, user directories, errors."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from ctxconv.sim.profiles import ENV_DIR, list_profiles, load_profile

PACKAGED = ["esp32s3", "nrf52840", "nrf5340", "rp2040", "stm32f746", "stm32h743"]


@pytest.fixture(autouse=True)
def _no_user_dir(monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)


def _yaml(name: str) -> dict:
    text = resources.files("ctxconv.sim").joinpath("mcu", f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def test_packaged_profiles_load():
    assert list_profiles() == PACKAGED
    for name in PACKAGED:
        p = load_profile(name)
        assert p.name == name
        assert 0 < p.arena_limit_bytes <= p.available_sram_bytes < p.sram_bytes
        assert 0 < p.available_flash_bytes < p.flash_bytes
        assert p.clock_hz >= 10_000_000 and p.cost.conv_cycles_per_mac > 0
        assert p.sources and all(isinstance(v, str) and v for v in p.sources.values())
        assert p.seconds(p.clock_hz) == pytest.approx(1.0)
    assert load_profile("stm32h743").max_arena_bytes == 512 * 1024
    assert load_profile("rp2040").scratch.conv_bytes_per_tap == 0  # reference kernels
    assert load_profile("nrf52840").scratch.conv_bytes_per_tap == 4  # CMSIS-NN im2col


def test_user_dir_adds_and_overrides(tmp_path: Path, monkeypatch):
    mine = _yaml("nrf52840") | {"name": "my_board", "sram_bytes": 131072}
    (tmp_path / "my_board.yaml").write_text(yaml.safe_dump(mine))
    faster = _yaml("rp2040") | {"clock_hz": 200_000_000}
    (tmp_path / "rp2040.yaml").write_text(yaml.safe_dump(faster))
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    assert list_profiles() == sorted(PACKAGED + ["my_board"])
    assert load_profile("my_board").sram_bytes == 131072
    assert load_profile("rp2040").clock_hz == 200_000_000
    # a path to a file works without the environment variable
    monkeypatch.delenv(ENV_DIR)
    assert load_profile(tmp_path / "my_board.yaml").name == "my_board"
    assert load_profile(str(tmp_path / "my_board.yaml")).path == str(tmp_path / "my_board.yaml")


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown MCU profile 'stm32f4'") as exc:
        load_profile("stm32f4")
    for name in PACKAGED:
        assert name in str(exc.value)


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda d: d.pop("clock_hz"), "clock_hz"),
        (lambda d: d["cost"].pop("fc_cycles_per_mac"), "cost.fc_cycles_per_mac"),
        (lambda d: d["reserved"].pop("flash_bytes"), "reserved.flash_bytes"),
        (lambda d: d.pop("sources"), "sources"),
        (lambda d: d.update(sram_bytes="lots"), "sram_bytes"),
        (lambda d: d.update(flash_bytes=-1), "flash_bytes"),
        (lambda d: d["reserved"].update(sram_bytes=10**9), "reserved.sram_bytes"),
        (lambda d: d["scratch"].update(im2col=3), "scratch"),
        (lambda d: d.update(power={"active_mw": "high"}), "power.active_mw"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, edit, field: str):
    d = _yaml("nrf52840")
    edit(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_profile(path)


def test_malformed_yaml_and_missing_paths(tmp_path: Path, monkeypatch):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="malformed YAML"):
        load_profile(path)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_profile(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        load_profile(tmp_path / "absent.yaml")
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="not a directory"):
        list_profiles()


def test_latency_estimate_from_cost_model():
    from fw_graphs import conv_graph

    from ctxconv.sim.cost import estimate_latency, op_work

    g = conv_graph(1, h=28, w=28, cin=1, cout=32, pool="MAX_POOL_2D")
    assert [op_work(g, op) for op in g.ops] == [28 * 28 * 32 * 9, 14 * 14 * 32 * 4]
    p = load_profile("stm32f746")
    est = estimate_latency(g, p)
    expect = (
        2 * p.cost.op_overhead_cycles
        + 28 * 28 * 32 * 9 * p.cost.conv_cycles_per_mac
        + 14 * 14 * 32 * 4 * p.cost.pool_cycles_per_element
    )
    assert est.cycles == pytest.approx(expect)
    assert est.seconds == pytest.approx(expect / 216e6)
    assert est.energy_mj == pytest.approx(p.active_power_mw * expect / 216e6)
    slow = estimate_latency(g, load_profile("rp2040"))
    assert slow.seconds > est.seconds
