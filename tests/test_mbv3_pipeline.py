"""The MobileNetV3 family end to end through the command line, on the embedded digits: train a few steps of each
of its phases (full, kernel, depth, expand), profile a latency table, search a nested chain under a MACs budget
(int8) and a latency budget, and deploy it: ONNX-checked dense networks, an int8 model and a runtime-slimmable
network. The ResNet family goes through the same stages in the quick demo's test."""

from __future__ import annotations

import json

import yaml

import ofa
from ofa.cli import main
from ofa.cli.demo import demo_config
from ofa.latency import LatencyTable
from ofa.rundir import DeployReport, RunDir, Selection
from search.genes import is_contained


def test_mbv3_trains_profiles_searches_and_deploys_a_nested_chain(tmp_path):
    config = demo_config(quick=True, supernet="ofa_mbv3_tiny")  # the shipped schedule's phases, each short
    for phase in config["phases"]:
        phase["epochs"] = 1
    config.update(batch_size=16, max_steps_per_epoch=3, eval={"calib_images": 64, "val_images": 96, "batch_size": 48})
    (tmp_path / "mbv3.yaml").write_text(yaml.safe_dump(config))
    run = RunDir(tmp_path / "run")
    assert main(["train", "--config", str(tmp_path / "mbv3.yaml"), "--out", str(run.path), "--quiet"]) == 0

    table_path = run.latency_table("this-cpu")
    assert main(["profile", "--supernet", str(run.path), "--out", str(table_path), "--device", "this-cpu",
                 "--coarse", "--quiet"]) == 0
    net, table = ofa.load(run.supernet), LatencyTable.load(table_path)
    assert net.family == "mbv3" and table.meta["host"]
    roomy = 2 * table.predict(net, net.space.largest())  # binding is tested elsewhere; here every stage must run
    assert main(["search", str(run.path), "--budget", "micro:macs=3M,precision=int8",
                 "--budget", f"board:latency_ms={roomy:.3f}@this-cpu", "--nested", "--table-size", "8",
                 "--predictor", "ridge", "--effort", "quick", "--rerank", "2", "--calib-batches", "1",
                 "--batch-size", "48", "--val-limit", "96", "--force", "--quiet"]) == 0  # a few steps: maybe at chance

    selection = Selection.read_run(run.path)
    chain = [net.space.arch_from_dict(selection.devices[d].arch) for d in selection.order]
    assert selection.nested and selection.order == ["micro", "board"] and is_contained(chain[0], chain[1])
    assert selection.devices["micro"].macs <= 3_000_000
    assert selection.devices["board"].latency_measured["verified"]  # timed in deployed form, on this host

    assert main(["deploy", str(run.path), "--slimmable", "--repeats", "3", "--calib-batches", "2", "--force",
                 "--quiet"]) == 0
    for device, arch in zip(selection.order, chain):
        report = DeployReport.read_run(run.path, device)
        assert report.onnx_check["passed"] and (run.device_dir(device) / "model.onnx").is_file()
        assert net.space.arch_from_dict(report.arch) == arch  # kernels included
    assert (run.device_dir("micro") / "model.int8.onnx").is_file()
    assert json.loads(run.slimmable_report.read_text())["widths"] == ["micro", "board"]
    assert " k" in run.report.read_text()  # report.md shows the MobileNet kernels
