"""A sweep of user mistakes across the CLI and the API: each ends with exit code 2 (CLI) or a specific exception
(API), one line naming the problem, and no partial output left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import ofa
import ofa.cli

TINY_PHASES = [{"name": "full", "epochs": 1, "lr": 0.05}]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A minimal run directory: an (untrained) tiny supernet and its config."""
    run = tmp_path_factory.mktemp("run")
    ofa.save(ofa.create_supernet("ofa_resnet_tiny"), run / "supernet.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump({"supernet": {"name": "ofa_resnet_tiny"},
                                                     "data": {"spec": "mnist5k", "seed": 0}}))
    return run


def _config(tmp: Path, **changes) -> str:
    config = {"supernet": {"name": "ofa_resnet_tiny"}, "data": {"spec": "mnist5k"}, "phases": TINY_PHASES}
    config.update(changes)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _bad_yaml(tmp: Path) -> str:
    path = tmp / "bad.yaml"
    path.write_text("phases: [\n  - name: full\n  epochs: {\n")
    return str(path)


def _selected(run: Path, arch: dict) -> None:
    (run / "search").mkdir()
    (run / "search" / "selected.json").write_text(json.dumps(
        {"supernet": "supernet.safetensors", "nested": False, "order": ["micro"],
         "devices": {"micro": {"budget": {"macs": 3000000}, "arch": arch, "macs": 1, "params": 1,
                               "latency_ms": None, "predicted": {"metric": "top1", "value": 50.0},
                               "measured": None}}}))


def _copy_run(tmp: Path, run_dir: Path, name: str, truncate: bool = False) -> Path:
    run = tmp / name
    run.mkdir()
    for file in ("supernet.json", "config.yaml", "supernet.safetensors"):
        data = (run_dir / file).read_bytes()
        (run / file).write_bytes(data[: len(data) // 3] if truncate and file.endswith(".safetensors") else data)
    return run


def _truncated_run(tmp: Path, run_dir: Path) -> str:
    run = _copy_run(tmp, run_dir, "broken_run", truncate=True)
    _selected(run, ofa.create_supernet("ofa_resnet_tiny").space.smallest().to_dict())
    return str(run)


def _run_with_selection(tmp: Path, run_dir: Path, arch: dict) -> str:
    run = _copy_run(tmp, run_dir, "selected_run")
    _selected(run, arch)
    return str(run)


# (case id, argv builder(tmp, run_dir), words the message must contain)
CLI_CASES = [
    ("train-missing-config", lambda t, r: ["train", "--config", str(t / "nope.yaml"), "--out", str(t / "out")],
     "does not exist"),
    ("train-malformed-yaml", lambda t, r: ["train", "--config", _bad_yaml(t), "--out", str(t / "out")],
     "not valid YAML"),
    ("train-unknown-key", lambda t, r: ["train", "--config", _config(t, colour="red"), "--out", str(t / "out")],
     "unknown config entry 'colour'"),
    ("train-unknown-supernet", lambda t, r: ["train", "--config", _config(t, supernet={"name": "ofa_resnet9"}),
                                             "--out", str(t / "out")], "unknown supernet 'ofa_resnet9'"),
    ("train-unknown-dataset", lambda t, r: ["train", "--config", _config(t, data={"spec": "no_such_dataset_x"}),
                                            "--out", str(t / "out")], "no_such_dataset_x"),
    ("train-missing-imagefolder", lambda t, r: ["train", "--config",
                                                _config(t, data={"spec": f"imagefolder:{t / 'nowhere'}"}),
                                                "--out", str(t / "out")], "nowhere"),
    ("train-zero-epochs", lambda t, r: ["train", "--config", _config(t, phases=[{"name": "a", "epochs": 0,
                                                                                  "lr": 0.1}]),
                                        "--out", str(t / "out")], "epochs must be a positive integer"),
    ("train-negative-batch", lambda t, r: ["train", "--config", _config(t, batch_size=-4), "--out",
                                           str(t / "out")], "batch_size must be a positive integer"),
    ("train-values-outside-space", lambda t, r: ["train", "--config",
                                                 _config(t, phases=[{"name": "a", "epochs": 1, "lr": 0.1,
                                                                     "widths": [0.1]}]),
                                                 "--out", str(t / "out")], "0.1"),
    ("train-resume-not-a-run", lambda t, r: ["train", "--resume", str(t)], "not a run directory"),
    ("search-missing-run", lambda t, r: ["search", str(t / "no_run"), "--budget", "macs=5M"], "does not exist"),
    ("search-budget-below-smallest", lambda t, r: ["search", str(r), "--budget", "macs=10k",
                                                   "--storage", f"sqlite:///{t / 's.db'}"], "smallest"),
    ("search-unknown-budget-kind", lambda t, r: ["search", str(r), "--budget", "flops=5M"], "flops"),
    ("search-negative-budget", lambda t, r: ["search", str(r), "--budget", "macs=-5M"], "-5M"),
    ("search-missing-devices-file", lambda t, r: ["search", str(r), "--devices", str(t / "devices.yaml")],
     "devices.yaml"),
    ("search-zero-table", lambda t, r: ["search", str(r), "--budget", "macs=5M", "--table-size", "0"],
     "table"),
    ("search-zero-workers", lambda t, r: ["search", str(r), "--budget", "macs=5M", "--workers", "0"], "--workers"),
    ("search-workers-on-journal", lambda t, r: ["search", str(r), "--budget", "macs=5M", "--workers", "2",
                                                "--storage", f"journal:{t / 'j.log'}"], "needs an RDB storage"),
    ("deploy-missing-run", lambda t, r: ["deploy", str(t / "no_run")], "no_run"),
    ("deploy-no-selection", lambda t, r: ["deploy", str(r)], "selected.json"),
    ("deploy-unknown-device", lambda t, r: ["deploy", _truncated_run(t, r), "--device", "toaster"], "toaster"),
    ("deploy-truncated-weights", lambda t, r: ["deploy", _truncated_run(t, r)], "truncated or corrupt"),
    ("deploy-arch-of-another-space", lambda t, r: ["deploy", _run_with_selection(
        t, r, {"resolution": 224, "depths": [2, 2, 2], "widths": [1, 1, 1], "expands": [[1, 1], [1, 1], [1, 1]],
               "stem": 1.0})], "resolution=224 is not allowed"),
    ("info-unknown-supernet", lambda t, r: ["info", "ofa_resnet9000"], "unknown supernet"),
    ("profile-unknown-supernet", lambda t, r: ["profile", "--supernet", "ofa_nope", "--out",
                                               str(t / "lut.json")], "ofa_nope"),
    ("demo-foreign-directory", lambda t, r: ["demo", "--out", str(r), "--quick"], "not an ofa demo directory"),
]


@pytest.mark.parametrize("case, argv, words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_mistakes_end_with_one_line_and_exit_code_2(case, argv, words, tmp_path, run_dir, capsys):
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    assert ofa.cli.main(argv(tmp_path, run_dir)) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "lut.json").exists()
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before  # nothing written into the run


API_CASES = [
    ("arch-wrong-type", lambda: ofa.create_supernet("ofa_resnet_tiny").space.arch_from_dict({"resolution": "28"}),
     ofa.ArchError),
    ("arch-mismatched-depths", lambda: ofa.create_supernet("ofa_resnet_tiny").space.arch_from_dict(
        {"resolution": 28, "stem": 1.0, "depths": [1, 1, 1], "widths": [1.0, 1.0, 1.0],
         "expands": [[1.0, 1.0], [1.0], [1.0]]}), ofa.ArchError),
    ("zero-classes", lambda: ofa.create_supernet("ofa_resnet_tiny", num_classes=0), ofa.OFAError),
    ("unknown-argument", lambda: ofa.create_supernet("ofa_resnet_tiny", colour="red"), ofa.OFAError),
    ("restrict-outside", lambda: ofa.create_supernet("ofa_resnet_tiny").space.restrict(depths=[7]), ofa.ArchError),
    ("calibrate-zero-batches", lambda: ofa.calibrate_bn(ofa.create_supernet("ofa_resnet_tiny"), [], num_batches=0),
     ofa.OFAError),
    ("unknown-timm-model", lambda: ofa.from_timm("no_such_net"), ofa.OFAError),
    ("unknown-sort-criterion", lambda: ofa.sort_channels(ofa.create_supernet("ofa_resnet_tiny"), "magic"),
     ofa.OFAError),
]


@pytest.mark.parametrize("case, call, error", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_mistakes_raise_specific_one_line_errors(case, call, error):
    with pytest.raises(error) as info:
        call()
    assert "\n" not in str(info.value) and len(str(info.value)) > 15


def test_the_sweep_covers_at_least_25_distinct_mistakes():
    assert len(CLI_CASES) + len(API_CASES) >= 25


@pytest.mark.parametrize("option, value", [("calib_batches", 0), ("repeats", 0), ("warmup", -1), ("threads", 0),
                                           ("int8_tolerance_pp", -1.0)])
def test_deploy_config_refuses_bad_values_before_any_work(tmp_path, option, value):
    from deploy.config import DeployConfig

    with pytest.raises(ofa.OFAError, match="must be"):
        DeployConfig(tmp_path, **{option: value})
