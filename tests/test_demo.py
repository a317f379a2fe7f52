"""`ofa demo --quick` end to end (every stage for real), its resume, and its refusal to mix runs."""

import json
import os
import subprocess
import sys

import pytest
import yaml

import ofa
from search.genes import is_contained


def ofa_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([sys.executable, "-m", "ofa.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900)


def test_shipped_configs_are_read_by_name_and_a_missing_one_lists_them(tmp_path, monkeypatch):
    from ofa import configs
    from ofa.cli.demo import DEMOS, demo_config
    from train.config import read_config

    assert {"tiny_cpu", "mbv3_tiny_cpu", "resnet50_imagenet"} <= set(configs.names())
    for supernet, entry in DEMOS.items():  # the demo trains exactly what a user gets with --config NAME
        assert demo_config(quick=False, supernet=supernet) == read_config(entry["config"])
    assert read_config("tiny_cpu.yaml") == yaml.safe_load(configs.path("tiny_cpu").read_text())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny_cpu.yaml").write_text("seed: 7\n")  # a file of the user's wins over the shipped name
    assert read_config("tiny_cpu.yaml") == {"seed": 7}
    with pytest.raises(ofa.OFAError, match="'nope.yaml' does not exist.*tiny_cpu"):
        read_config("nope.yaml")


def test_quick_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    result = ofa_cli("demo", "--quick", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    selected = json.loads((out / "search" / "selected.json").read_text())
    # A nested chain: each device's arch is contained in the next one's. Not necessarily in MAC order, since the
    # resolution is free (a re-searched child may run at a larger input than its parent).
    space = ofa.load(out / "supernet.safetensors").space
    chain = [space.arch_from_dict(selected["devices"][d]["arch"]) for d in selected["order"]]
    assert selected["nested"] and all(is_contained(a, b) for a, b in zip(chain, chain[1:]))
    assert set(selected["devices"]) == {"micro", "mobile", "server", "this-cpu"}
    for device, entry in selected["devices"].items():
        budget = entry["budget"]
        if budget["macs"] is not None:
            assert entry["macs"] <= budget["macs"]
        report = json.loads((out / "deploy" / device / "report.json").read_text())
        assert report["onnx_check"]["passed"] and (out / "deploy" / device / "model.onnx").is_file()
        assert 0 <= report["top1"]["measured"]["top1"] <= 100
        assert device in result.stdout  # the final table
    assert (out / "deploy" / "slimmable").is_dir()
    assert (out / "report.md").is_file() and (out / "search" / "pareto.png").stat().st_size > 10_000
    assert "measured top-1 (test)" in result.stdout
    # one device runs int8 too: its quantized model beside the float one, and its float vs int8 line
    assert selected["devices"]["server"]["budget"]["precision"] == "int8"
    assert (out / "deploy" / "server" / "model.int8.onnx").is_file() and "server int8: top-1" in result.stdout

    again = ofa_cli("demo", "--quick", "--out", str(out), "--quiet")
    assert again.returncode == 0 and again.stdout.count("already done") == 4

    other_mode = ofa_cli("demo", "--out", str(out))
    assert other_mode.returncode == 2 and "holds a demo run with --quick" in other_mode.stderr
