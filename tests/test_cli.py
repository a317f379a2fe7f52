import argparse
import json
import os
import subprocess
import sys

import ofa.cli
from ofa.cli.format import worth_saying


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([sys.executable, "-m", "ofa.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def test_help_lists_the_subcommands():
    result = run("--help")
    assert result.returncode == 0 and "info" in result.stdout


def test_info_lists_every_supernet_with_its_space():
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["supernets"]}
    assert set(rows) >= {"ofa_resnet_tiny", "ofa_resnet18", "ofa_resnet34", "ofa_resnet50"}
    assert rows["ofa_resnet18"]["largest"]["params"] == 11_689_512
    text = run("info", "ofa_resnet_tiny").stdout
    assert "stage 2: depth [1, 2]" in text and "resolutions [16, 20, 24, 28, 32]" in text


def test_unknown_supernet_is_one_line_and_exit_code_2():
    result = run("info", "ofa_resnet9000")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown supernet 'ofa_resnet9000'; available:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_users_train_module_shadowing_ours_is_detected(tmp_path):
    (tmp_path / "train.py").write_text("print('user code')\n")
    code = ("import sys; sys.path.insert(0, '.'); from ofa.cli.modules import own_module as _own_module\n"
            "try:\n    _own_module('train')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "OFAError" in result.stdout and "shadows it" in result.stdout


def test_info_warns_about_a_foreign_ofa_distribution(monkeypatch, capsys):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "packages_distributions",
                        lambda: {"ofa": ["ofa-supernet", "ofa"]})
    assert ofa.cli.main(["info", "ofa_resnet_tiny"]) == 0
    assert "pip uninstall ofa" in capsys.readouterr().err


def test_every_option_of_every_command_has_help_and_names_its_default():
    parser = ofa.cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or "rest" in action.dest:
                continue
            assert action.help, f"ofa {name} {action.option_strings[0]} has no help line"
            if worth_saying(action.default):
                shown = sub.formatter_class("x")._get_help_string(action) % {"default": action.default}
                assert "default" in shown, f"ofa {name} {action.option_strings[0]} hides its default"


def test_a_lazy_export_named_like_its_submodule_survives_a_sibling_export():
    code = "import ofa; ofa.Metrics; print(callable(ofa.evaluate), ofa.evaluate.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["True", "ofa.evaluate"], result.stderr
