"""Int8 devices: latency tables timed on the quantized onnxruntime form (`ofa profile --int8`), budgets that
take `precision: int8` and are held against the device's int8 table, and bad input refused in one line before
any work. The int8 deploy itself is checked in test_deploy.py (its `watch` device runs int8)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from test_deploy import make_run

import ofa
from ofa.cli import main
from ofa.latency import LatencyTable, distinct_units
from search.budgets import CostModel, load_devices, load_latency_tables, parse_budget


def _small_net():
    """ofa_resnet_tiny cut to two stages, elastic in depth only, at one resolution: an int8 table in seconds."""
    return ofa.create_supernet("ofa_resnet_tiny", resolutions=[16], width_mults=[1.0], expand_ratios=[1.0],
                               stem_mults=[1.0], stage_channels=[16, 32], depths=[[1, 2], [1, 2]],
                               strides=[2, 2]).eval()


def test_int8_table_times_the_quantized_form_and_records_it(tmp_path):
    from deploy.profile import ProfileSettings, profile

    net = _small_net()
    settings = ProfileSettings(repeats=4, rounds=1, warmup=1, fit_subnets=2, eval_subnets=2, subnet_repeats=4)
    path = tmp_path / "latency" / "cpu.int8.json"
    profile(net, device="cpu", settings=settings, threads=1, out=path, progress=False, int8=True)
    table = LatencyTable.load(path)
    assert (table.runtime, table.precision, table.device) == ("onnxruntime", "int8", "cpu")
    assert table.meta["quantization"]["per_channel"] and table.meta["quantization"]["quant_format"] == "qdq"
    assert table.meta["threads"] == 1 and table.meta["statistic"] == "median_ms"
    assert set(table.units) == set(distinct_units(net)) and all(ms > 0 for ms in table.units.values())
    assert table.meta["accuracy"]["eval_subnets"] == 2 and table.meta["accuracy"]["mape_pct"] >= 0
    for arch in (net.space.smallest(), net.space.largest()):
        assert table.predict(net, arch) > 0
    # An int8 device is budgeted against this table, and it says what it timed
    costs = CostModel(net, load_latency_tables([parse_budget("latency_ms=5@cpu,precision=int8")], tmp_path))
    assert set(costs.tables) == {"cpu.int8"} and "precision='int8'" in repr(costs.tables["cpu.int8"])
    old = json.loads(path.read_text())
    del old["runtime"], old["precision"]  # a table made before the fields: torch float32
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert (LatencyTable.load(tmp_path / "old.json").runtime, LatencyTable.load(tmp_path / "old.json").precision) \
        == ("torch", "float32")


def test_int8_devices_are_budgeted_against_their_int8_table(tmp_path):
    net = ofa.create_supernet("ofa_resnet_tiny")
    units = {key: 1e-3 * (1 + sum(v for v in unit.values() if isinstance(v, int)))
             for key, unit in distinct_units(net).items()}
    (tmp_path / "latency").mkdir()
    LatencyTable("pixel", units).save(tmp_path / "latency" / "pixel.json")
    LatencyTable("pixel", {k: v / 2 for k, v in units.items()}, meta={"precision": "int8", "runtime": "onnxruntime"}
                 ).save(tmp_path / "latency" / "pixel.int8.json")
    yaml_path = tmp_path / "devices.yaml"
    yaml_path.write_text("devices:\n  fp: {latency_ms: 9, latency_device: pixel}\n"
                         "  q8: {latency_ms: 9@pixel, precision: int8}\n  mcu: {macs: 3M, precision: int8}\n")
    fp, q8, mcu = load_devices(yaml_path)
    assert (fp.precision, q8.precision, mcu.precision) == ("float32", "int8", "int8")
    assert (fp.latency_key, q8.latency_key, mcu.latency_key) == ("pixel", "pixel.int8", None)
    assert q8.to_dict()["precision"] == "int8" and q8.describe().endswith("int8")
    costs = CostModel(net, load_latency_tables([fp, q8, mcu], tmp_path))
    large = net.space.largest()
    assert costs.costs(large, q8)["latency_ms"] == pytest.approx(costs.costs(large, fp)["latency_ms"] / 2)
    assert parse_budget("phone:macs=5M,precision=int8").precision == "int8"
    # A float table where the int8 one should be (or the other way round) is refused, naming the fix
    LatencyTable("pixel", units).save(tmp_path / "latency" / "pixel.int8.json")
    with pytest.raises(ofa.OFAError, match="times float32, not int8.*ofa profile --int8"):
        load_latency_tables([q8], tmp_path)
    with pytest.raises(ofa.OFAError, match=r"unknown device 'pixel.int8'.*--lut pixel.int8=PATH"):
        load_latency_tables([q8], None)


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def test_bad_precision_and_missing_export_extra_fail_before_any_work(run, tmp_path, capsys, monkeypatch):
    (tmp_path / "devices.yaml").write_text("devices:\n  phone: {macs: 5M, precision: fp16}\n")
    err = _one_line_error(["search", str(run), "--devices", str(tmp_path / "devices.yaml")], capsys)
    assert "precision 'fp16' is not supported; allowed: float32, int8" in err
    err = _one_line_error(["search", str(run), "--budget", "macs=5M,precision=bf16"], capsys)
    assert "'bf16'" in err and "float32, int8" in err
    assert "no limit" in _one_line_error(["search", str(run), "--budget", "precision=int8"], capsys)
    assert not (run / "search" / "study.db").exists()
    assert ">= 0" in _one_line_error(["deploy", str(run), "--int8", "--int8-tolerance", "-1"], capsys)

    selected = json.loads((run / "search" / "selected.json").read_text())
    selected["devices"]["phone"]["budget"]["precision"] = "int4"
    (run / "search" / "selected.json").write_text(json.dumps(selected))
    err = _one_line_error(["deploy", str(run), "--quiet"], capsys)
    assert "device 'phone'" in err and "'int4'" in err and "allowed: float32, int8" in err
    assert not (run / "deploy").exists()

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("onnxruntime") else real(name, *a))
    err = _one_line_error(["deploy", str(run), "--int8", "--quiet"], capsys)
    assert "int8 needs" in err and "onnxruntime" in err and "pip install 'ofa-supernet[export]'" in err
    err = _one_line_error(["profile", "--supernet", "ofa_resnet_tiny", "--int8", "--out", str(tmp_path / "t.json")],
                          capsys)
    assert "int8 needs" in err and not (tmp_path / "t.json").exists() and not (run / "deploy").exists()


def test_deploy_int8_flag_covers_every_device():
    from deploy.run import device_precisions
    from ofa.rundir import Selection

    selected = Selection.from_dict(
        {"devices": {"a": {"budget": {"macs": 1}}, "b": {"budget": {"precision": "int8"}}, "c": {}}})
    assert device_precisions(selected, ["a", "b", "c"], int8=False) == {"a": "float32", "b": "int8", "c": "float32"}
    assert set(device_precisions(selected, ["a", "b", "c"], int8=True).values()) == {"int8"}
