"""The run directory as types: paths, the typed records' round trips, their format versions, and report.md's
arch text (kernels of MobileNet archs)."""

import json

import pytest

import ofa
from ofa.errors import OFAError
from ofa.rundir import DeployReport, RunDir, SearchReport, SelectedDevice, Selection, SlimmableReport

ARCH = {"resolution": 32, "depths": [1, 2], "widths": [0.5, 1.0], "expands": [[0.25], [0.25, 0.5]]}


def _device(macs: int, **extra) -> dict:
    return {"budget": {"macs": macs, "params": None, "latency_ms": None, "latency_device": None,
                       "precision": "float32"},
            "arch": ARCH, "macs": macs - 1, "params": 1000, "latency_ms": None,
            "predicted": {"metric": "top1", "value": 50.0}, "measured": None, "latency_measured": None, **extra}


SELECTION = {"supernet": "supernet.safetensors", "nested": False, "order": ["phone", "board"],
             "devices": {"phone": _device(5_000_000), "board": _device(1_000_000)}}

DEPLOY_REPORT = {
    "format": 1, "device": "phone", "precision": "float32", "arch": ARCH, "budget": SELECTION["devices"]["phone"]["budget"],
    "macs": 4_000_000, "params": 1000,
    "preprocessing": {"input_size": [1, 32, 32], "mean": [0.13], "std": [0.31], "interpolation": "bilinear"},
    "files": {"model.onnx": 10, "model.safetensors": 20}, "bn_folded_for_inference": True,
    "onnx_check": {"passed": True, "max_abs_diff": 1e-6, "tolerance": 1e-4, "opset": 18},
    "torch_export_check": {"passed": True, "max_abs_diff": 0.0},
    "latency": {"host": "here", "machine": "x86_64", "form": "deploy.load (BN folded, channels-last)",
                "statistic": "median",
                "batch1": {"median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.2, "threads": 1, "repeats": 5, "warmup": 5},
                "batch32": {"median_ms": 9.0, "p10_ms": 8.5, "p90_ms": 9.9, "threads": 1, "repeats": 5, "warmup": 5}},
    "latency_predicted_ms": 1.1, "latency_budget_ms": None, "within_latency_budget": None,
    "latency_verified_by_search": None, "latency_table": None, "int8": None,
    "top1": {"predicted": {"metric": "top1", "value": 50.0},
             "measured": {"split": "test", "top1": 60.0, "ci_low": 55.0, "ci_high": 65.0, "loss": 1.0, "n": 100},
             "measured_by_search": None},
}

SLIMMABLE_REPORT = {
    "format": 1, "widths": ["board", "phone"], "latency_ms_batch1": [0.5, 1.0], "threads": 1, "mode": "fast",
    "memory_limit": 2.0, "memory_bytes": {"total": 300}, "derived_widths": ["phone"],
    "memory_bytes_after_drop_stored": 250, "largest_dense_bytes": 200,
    "timing": {"statistic": "median", "how": "interleaved", "repeats": 5, "warmup": 5,
               "per_width": [{f"batch{b}": {"slimmable_ms": 1.0, "dense_ms": 1.0, "ratio": 1.0} for b in (1, 32)}] * 2},
    "max_abs_diff_vs_dense": [1e-6, 2e-6], "macs": [1, 2], "files": {"slimmable.safetensors": 9},
}

SEARCH_REPORT = {
    "format": 1, "predictor": {"family": "ridge", "metric": "top1", "n": 10, "rmse": 1.0}, "table_size": 40,
    "mode": "constrained", "effort": "quick", "generations": 4, "population": 12,
    "devices": [{"device": "phone", "budget": "macs<=5M", "seconds": 1.0, "predicted": 50.0, "measured": None,
                 "latency": None}],
}

RECORDS = [(Selection, SELECTION), (DeployReport, DEPLOY_REPORT), (SlimmableReport, SLIMMABLE_REPORT),
           (SearchReport, SEARCH_REPORT)]


@pytest.mark.parametrize(("cls", "d"), RECORDS, ids=lambda x: getattr(x, "__name__", ""))
def test_records_round_trip_through_dicts_and_files(cls, d, tmp_path):
    record = cls.from_dict(d)
    assert record.to_dict() == d  # the JSON content is what it was
    assert cls.from_dict(record.to_dict()) == record
    path = record.write(tmp_path / "sub" / "record.json")
    assert json.loads(path.read_text()) == d
    assert cls.read(path) == record


def test_the_records_carry_their_format_and_selected_json_keeps_its_keys():
    for cls, d in RECORDS:
        written = cls.from_dict({k: v for k, v in d.items() if k != "format"}).to_dict()
        if cls is Selection:  # its top-level keys are a contract: format 1 is implicit
            assert set(written) == {"supernet", "nested", "order", "devices"}
        else:
            assert next(iter(written.items())) == ("format", 1)


def test_a_file_without_format_is_format_1_and_a_newer_one_is_refused(tmp_path):
    old = {k: v for k, v in DEPLOY_REPORT.items() if k != "format"}  # as earlier releases wrote it
    assert DeployReport.from_dict(old) == DeployReport.from_dict(DEPLOY_REPORT)
    path = tmp_path / "selected.json"
    path.write_text(json.dumps(dict(SELECTION, format=7)))
    with pytest.raises(OFAError, match=r"selected.json has format 7; this ofa-supernet \(.*\) reads format 1: "
                                       r"upgrade ofa-supernet$"):
        Selection.read(path)
    for bad in ("1", 0, True, None):
        with pytest.raises(OFAError, match="unknown format"):
            DeployReport.from_dict(dict(DEPLOY_REPORT, format=bad))


def test_malformed_records_are_one_clear_line(tmp_path):
    with pytest.raises(OFAError, match=r"report.json has no 'arch' entry"):
        DeployReport.from_dict({k: v for k, v in DEPLOY_REPORT.items() if k != "arch"})
    with pytest.raises(OFAError, match=r"lists no devices"):
        Selection.from_dict(dict(SELECTION, devices=["phone"]))
    with pytest.raises(OFAError, match=r"device 'phone' is not a JSON object"):
        Selection.from_dict(dict(SELECTION, devices={"phone": 3}))
    path = tmp_path / "selected.json"
    path.write_text("[1, 2]")
    with pytest.raises(OFAError, match=r"selected.json is not a JSON object \(got list\); run it again$"):
        Selection.read(path, hint="run it again")
    path.write_text("{broken")
    with pytest.raises(OFAError, match=r"not valid JSON.*run it again$"):
        Selection.read(path, hint="run it again")


def test_unknown_and_absent_keys_survive_a_merge(tmp_path):
    """An earlier search's devices are kept as they were: keys this release does not know, and keys it knows
    that they lack."""
    run = RunDir(tmp_path)
    old = dict(SELECTION, comment="from a later release",
               devices={"phone": {"macs": 5}, "board": _device(1_000_000, energy_mj=3.5)})
    Selection.from_dict(old).write(run.selection)
    new = Selection(order=["server"], devices={"server": SelectedDevice(arch=ARCH, macs=9)})
    merged = new.merge(Selection.read(run.selection))
    assert merged.order == ["server", "phone", "board"]
    assert merged.devices["board"].extra == {"energy_mj": 3.5}
    merged.write(run.selection)
    again = json.loads(run.selection.read_text())
    assert again["devices"]["phone"] == {"macs": 5} and again["devices"]["board"]["energy_mj"] == 3.5
    assert again["devices"]["server"]["macs"] == 9 and again["devices"]["server"]["budget"] is None
    assert Selection.from_dict(old).extra == {"comment": "from a later release"}
    nested = Selection(nested=True, order=["server"], devices=new.devices)
    assert nested.merge(Selection.read(run.selection)) is nested  # a nested chain is never merged


def test_selection_orders_devices_and_reads_their_precision():
    s = Selection.from_dict({"order": ["b"], "devices": {"a": {}, "b": {"budget": {"precision": "int8"}}}})
    assert s.ordered() == ["b", "a"] and s.supernet == "supernet.safetensors" and not s.nested
    assert s.devices["a"].precision == "float32" and s.devices["b"].precision == "int8"
    assert s.to_dict() == {"order": ["b"], "devices": {"a": {}, "b": {"budget": {"precision": "int8"}}}}


def test_run_dir_paths(tmp_path):
    run = RunDir(tmp_path)
    assert run.config == tmp_path / "config.yaml" and run.checkpoints == tmp_path / "checkpoints"
    assert run.latency_table("cpu") == tmp_path / "latency" / "cpu.json"
    assert run.latency_table("cpu", "int8") == tmp_path / "latency" / "cpu.int8.json"
    assert run.selection == tmp_path / "search" / "selected.json"
    assert run.search_report == tmp_path / "search" / "report.json"
    assert run.device_report("phone") == tmp_path / "deploy" / "phone" / "report.json"
    assert run.slimmable_report == tmp_path / "deploy" / "slimmable" / "report.json"
    for device in ("phone", "board", "slimmable", ".watch.tmp123"):  # a deploy in progress is not deployed
        DeployReport.from_dict(DEPLOY_REPORT).write(run.device_report(device))
    assert run.deployed_devices() == ["board", "phone"]
    assert DeployReport.read_run(tmp_path, "phone").batch1["median_ms"] == 1.0


@pytest.mark.parametrize("supernet", ["ofa_mbv3_tiny", "ofa_vit_tiny", "ofa_resnet_tiny"])
def test_report_md_shows_every_arch_dimension(supernet, tmp_path):
    """report.md's arch column names the kernels of MobileNet archs (and the heads of ViT archs): two subnets
    that differ only there must not read alike."""
    from deploy.report import arch_text, write_report

    arch = ofa.create_supernet(supernet).space.sample(3).to_dict()
    text = arch_text(arch)
    for name, letter in (("kernels", "k"), ("heads", "h")):
        rows = "|".join(",".join(str(v) for v in row) for row in arch.get(name) or [])
        assert (f" {letter}{rows}" in text) == (arch.get(name) is not None), text
    run = RunDir(tmp_path)
    DeployReport.from_dict(dict(DEPLOY_REPORT, arch=arch)).write(run.device_report("phone"))
    SlimmableReport.from_dict({k: v for k, v in SLIMMABLE_REPORT.items() if k != "derived_widths"}).write(
        run.slimmable_report)  # as older releases wrote it
    report = write_report(tmp_path).read_text()
    assert f"`{text}`" in report and "at dense speed: board, phone" in report
