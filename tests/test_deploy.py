"""ofa deploy end to end on a hand-built run (real mnist5k data): artifacts, round trip in a fresh process,
ONNX and torch.export equality, report files, the slimmable artifact, the int8 model of a device whose budget
says precision: int8, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import randomize_bn

import deploy
import ofa
from ofa.cli import main

SMALL = {"resolution": 16, "stem": 0.8, "depths": [1, 1, 1], "widths": [0.8, 0.65, 0.65],
         "expands": [[0.5], [0.5], [0.35]]}
LARGE = {"resolution": 20, "stem": 1.0, "depths": [2, 1, 2], "widths": [1.0, 0.8, 1.0],
         "expands": [[0.75, 1.0], [0.75], [0.5, 1.0]]}


def _entry(net, arch: dict, budget: dict) -> dict:
    macs, params = net.costs(arch)
    return {"budget": budget, "arch": arch, "macs": macs, "params": params, "latency_ms": None,
            "predicted": {"metric": "top1", "value": 50.0}, "measured": None}


def make_run(root: Path) -> Path:
    """A run directory as train + search leave it: supernet, config.yaml, search/selected.json (contract 4)."""
    run = root / "run"
    net = randomize_bn(ofa.create_supernet("ofa_resnet_tiny"))
    ofa.save(net, run / "supernet.safetensors")
    (run / "config.yaml").write_text("supernet: ofa_resnet_tiny\ndata: {spec: mnist5k, seed: 0}\n")
    (run / "search").mkdir()
    no_budget = {"macs": None, "params": None, "latency_ms": None, "latency_device": None}
    selected = {"supernet": "supernet.safetensors", "nested": True, "order": ["watch", "phone"],
                "devices": {"watch": _entry(net, SMALL, dict(no_budget, macs=3_000_000, precision="int8")),
                            "phone": _entry(net, LARGE, dict(no_budget, latency_ms=5.0, latency_device="cpu"))}}
    (run / "search" / "selected.json").write_text(json.dumps(selected))
    (run / "search" / "pareto.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return run


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("deploy"))
    assert main(["profile", "--supernet", "ofa_resnet_tiny", "--out", str(run / "latency" / "cpu.json"),
                 "--coarse", "--threads", "1", "--quiet", "--device", "cpu"]) == 0
    code = main(["deploy", str(run), "--slimmable", "--calib-batches", "2", "--repeats", "5", "--threads", "1",
                 "--quiet", "--force"])  # random weights: at chance level, deployed only when forced
    assert code == 0
    return run


def test_deploy_writes_verified_artifacts_and_reports(deployed):
    run = deployed
    for device, arch in (("watch", SMALL), ("phone", LARGE)):
        folder = run / "deploy" / device
        for name in ("model.safetensors", "model.json", "model.onnx", "model.pt2", "report.json"):
            assert (folder / name).is_file(), name
        report = json.loads((folder / "report.json").read_text())
        assert report["arch"] == arch
        assert report["onnx_check"]["passed"] and report["onnx_check"]["max_abs_diff"] <= 1e-4
        assert report["onnx_check"]["opset"] >= 17
        assert report["torch_export_check"]["passed"]
        for batch in ("batch1", "batch32"):
            lat = report["latency"][batch]
            assert lat["median_ms"] > 0 and lat["threads"] == 1 and lat["warmup"] == 5 and lat["repeats"] == 5
        assert report["files"]["model.onnx"] == (folder / "model.onnx").stat().st_size
        measured = report["top1"]["measured"]
        assert measured["n"] == 750 and measured["ci_low"] <= measured["top1"] <= measured["ci_high"]
        description = json.loads((folder / "model.json").read_text())
        assert description["data_config"]["input_size"] == [1, arch["resolution"], arch["resolution"]]
        assert description["class_names"] == [str(d) for d in range(10)]
        assert deploy.load(folder).class_names == description["class_names"]
        umask = os.umask(0)
        os.umask(umask)
        for path in (folder, folder / "model.onnx", folder / "model.json", folder / "report.json"):
            want = (0o777 if path.is_dir() else 0o666) & ~umask
            assert path.stat().st_mode & 0o777 == want, path  # a serving process can read what deploy wrote
        assert description["data_config"]["mean"] == [pytest.approx(0.1308, abs=1e-3)]
    phone = json.loads((run / "deploy" / "phone" / "report.json").read_text())
    assert phone["latency_predicted_ms"] > 0 and phone["latency_table"]["device"] == "cpu"
    text = (run / "report.md").read_text()
    assert text.index("| watch |") < text.index("| phone |")
    assert "search/pareto.png" in text and "deploy/slimmable/" in text
    assert not [p for p in (run / "deploy").iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_int8_device_gets_a_quantized_model_measured_against_the_float_one(deployed, capsys):
    import onnx
    import onnxruntime as ort

    folder = deployed / "deploy" / "watch"
    report = json.loads((folder / "report.json").read_text())
    assert report["precision"] == "int8" and report["files"]["model.int8.onnx"] > 0
    q = report["int8"]
    assert q["quantization"]["calibration"] == {"split": "calib", "images": 128}  # 2 batches of 64, never test
    assert q["quantization"]["per_channel"] and q["quantization"]["quant_format"] == "qdq"
    assert q["quantization"]["reduce_range"]  # 7-bit weights: no u8 x s8 overflow on pre-VNNI x86
    graph = onnx.load(str(folder / "model.int8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    scales = [i for i in graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] > 1]
    assert scales  # per-channel weight scales
    # Sizes and accuracy as measured: int8 weights take about a quarter of the float file
    assert q["size_bytes"]["int8"] == (folder / "model.int8.onnx").stat().st_size
    assert q["size_bytes"]["ratio"] < 0.5
    t = q["top1"]
    assert t["float32"]["n"] == t["int8"]["n"] == 750 and t["split"] == "test"
    assert t["drop_pp"] == pytest.approx(t["float32"]["top1"] - t["int8"]["top1"])
    low, high = t["drop_ci95_pp"]
    assert low <= t["drop_pp"] <= high and t["flagged"] == (low > t["tolerance_pp"] == 1.0)
    assert t["float32"]["top1"] == pytest.approx(report["top1"]["measured"]["top1"], abs=0.3)  # same model, ORT
    lat = q["latency"]
    assert lat["runtime"].startswith("onnxruntime") and lat["threads"] == 1 and lat["batch"] == 1
    assert lat["ratio"] == pytest.approx(lat["int8"]["median_ms"] / lat["float32"]["median_ms"])
    # The int8 file runs on its own in onnxruntime with a dynamic batch, close to the float model on real images
    from ofa.data import load_run_data

    x = next(iter(load_run_data(deployed).eval_loader("test", 16, batch_size=6)))[0].numpy()
    runs = [ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for f in ("model.onnx", "model.int8.onnx")]
    assert runs[1].shape == (6, 10) and np.abs(runs[1] - runs[0]).max() < 0.1 * np.abs(runs[0]).max()
    assert json.loads((deployed / "deploy" / "phone" / "report.json").read_text())["int8"] is None
    text = (deployed / "report.md").read_text()
    assert "## Int8 models" in text and "| watch |" in text.split("## Int8 models")[1]


def test_deployed_bn_is_calibrated_not_sliced(deployed):
    net = ofa.load(deployed / "supernet.safetensors")
    sliced = net.extract(net.space.arch_from_dict(SMALL))
    ours = deploy.load(deployed / "deploy" / "watch", fold=False)
    assert not torch.allclose(ours.bn1.running_mean, sliced.bn1.running_mean)
    assert torch.equal(ours.conv1.weight, sliced.conv1.weight)  # weights stay unfolded on disk


def test_artifact_round_trip_in_fresh_process_without_train_or_search(deployed, tmp_path):
    folder = deployed / "deploy" / "phone"
    reference = ofa.load(folder / "model.safetensors")  # unfolded, as stored
    x = torch.randn(5, 1, 20, 20)
    with torch.no_grad():
        safetensors.torch.save_file({"x": x, "y": reference(x)}, str(tmp_path / "io.safetensors"))
    script = textwrap.dedent(f"""
        import sys, torch, safetensors.torch, deploy
        model = deploy.load({str(folder)!r})
        io = safetensors.torch.load_file({str(tmp_path / 'io.safetensors')!r})
        with torch.no_grad():
            diff = (model(io["x"]) - io["y"]).abs().max().item()
        bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        leaked = [m for m in ("train", "search") if m in sys.modules or any(k.startswith(m + ".") for k in sys.modules)]
        print(diff, bns, leaked, model.description["data_config"]["input_size"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    diff, bns, leaked, size = out.stdout.strip().split(" ", 3)
    assert float(diff) <= 1e-5
    assert bns == "0"  # folded for inference
    assert leaked == "[]"
    assert size == "[1, 20, 20]"


def test_onnx_and_torch_export_match_pytorch_with_dynamic_batch(deployed):
    import onnxruntime as ort

    folder = deployed / "deploy" / "watch"
    model = deploy.load(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(folder / "model.pt2")).module()
    for batch in (1, 7):
        x = torch.randn(batch, 1, 16, 16)
        with torch.no_grad():
            expected = model(x).numpy()
            assert np.abs(program(x).numpy() - expected).max() <= 1e-4
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == (batch, 10)
        assert np.abs(got - expected).max() <= 1e-4


def test_slimmable_artifact_matches_each_dense_artifact(deployed):
    slim = deploy.load(deployed / "deploy" / "slimmable")
    assert isinstance(slim, deploy.SlimmableNet) and slim.names == ["watch", "phone"]
    assert slim.latency_ms is not None and len(slim.latency_ms) == 2
    for name, r in (("watch", 16), ("phone", 20)):
        dense = deploy.load(deployed / "deploy" / name, fold=False)
        slim.set_width(name)
        x = torch.randn(3, 1, r, r)
        with torch.no_grad():
            assert (slim(x) - dense(x)).abs().max() <= 1e-5


def _cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def test_errors_missing_run_and_unknown_device(deployed, tmp_path, capsys):
    code, err = _cli(["deploy", str(tmp_path / "nope"), "--quiet"], capsys)
    assert code == 2 and err.startswith("error: ") and "does not exist" in err and len(err.splitlines()) == 1
    code, err = _cli(["deploy", str(deployed), "--device", "fridge", "--quiet"], capsys)
    assert code == 2 and "'fridge'" in err and "watch, phone" in err and len(err.splitlines()) == 1
    reversed_run = tmp_path / "reversed"
    shutil.copytree(deployed, reversed_run, ignore=shutil.ignore_patterns("deploy", "report.md"))
    selected = json.loads((reversed_run / "search" / "selected.json").read_text())
    selected["order"] = ["phone", "watch"]  # largest first: not a nested chain
    (reversed_run / "search" / "selected.json").write_text(json.dumps(selected))
    code, err = _cli(["deploy", str(reversed_run), "--slimmable", "--quiet"], capsys)
    assert code == 2 and "needs nested subnets" in err and not (reversed_run / "deploy").exists()
    guessing = tmp_path / "guessing"  # a classifier of zeros: every image gets class 0, about 1 in 10 right
    shutil.copytree(deployed, guessing, ignore=shutil.ignore_patterns("deploy", "report.md"))
    net = ofa.load(guessing / "supernet.safetensors")
    with torch.no_grad():
        for p in getattr(net, net.classifier_name).parameters():
            p.zero_()
    ofa.save(net, guessing / "supernet.safetensors")
    code, err = _cli(["deploy", str(guessing), "--device", "phone", "--quiet"], capsys)
    assert code == 2 and "phone: test top-1" in err and "chance level" in err and "--force" in err
    assert not (guessing / "deploy" / "phone").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _cli(["deploy", str(empty), "--quiet"], capsys)
    assert code == 2 and "selected.json" in err


def test_errors_corrupt_or_truncated_weights(deployed, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(deployed, run, ignore=shutil.ignore_patterns("deploy", "report.md"))
    weights = run / "supernet.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, err = _cli(["deploy", str(run), "--quiet"], capsys)
    assert code == 2 and "truncated or corrupt" in err and len(err.splitlines()) == 1
    assert not (run / "deploy").exists() and not (run / "report.md").exists()  # nothing half-written

    artifact = tmp_path / "watch"
    shutil.copytree(deployed / "deploy" / "watch", artifact)
    model = artifact / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(ofa.WeightsError, match="truncated or corrupt"):
        deploy.load(artifact)
    with pytest.raises(ofa.WeightsError, match="no deployed network"):
        deploy.load(tmp_path)


def test_onnx_check_tolerance_follows_the_size_of_the_outputs(tmp_path):
    """float32 rounding grows with the logits: a network with large outputs is not refused for it, while a file
    that computes something else still is."""
    pytest.importorskip("onnxruntime")
    from deploy.export import export_onnx, verify_onnx

    torch.manual_seed(0)
    net = ofa.create_supernet("ofa_resnet_tiny").eval()
    dense = net.extract(net.space.smallest()).eval()
    with torch.no_grad():
        dense.fc.weight.mul_(1e4)
    path = export_onnx(dense, tmp_path / "model.onnx")
    check = verify_onnx(path, dense)
    assert check["output_scale"] > 100 and check["allowed_diff"] == pytest.approx(1e-4 * check["output_scale"])
    assert check["passed"], check
    with torch.no_grad():
        dense.fc.bias.add_(0.05 * check["output_scale"])  # the file no longer computes this network
    assert not verify_onnx(path, dense)["passed"]
