"""Saving and loading networks: safetensors weights plus a JSON description. Nothing is ever unpickled.

``save(net, "dir/supernet.safetensors")`` writes ``dir/supernet.safetensors`` and ``dir/supernet.json``, each
atomically (a temporary file, then a rename). The weights file records a hash of its description, so a weights
file paired with another network's description is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from .errors import OFAError, WeightsError
from .registry import family_class, static_class

FORMAT = "ofa-supernet/1"


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _digest(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have: temporary files and folders are created
    0600/0700 whatever the umask, and a deployed model must stay readable by the server that loads it."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


def atomic_write(path: Path, write, suffix: str = ".tmp") -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see a half-written file.

    ``suffix`` ends the temporary file's name (for writers that insist on an extension).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(net: nn.Module, path: str | os.PathLike) -> Path:
    """Save a supernet or an extracted network; returns the weights path."""
    if not hasattr(net, "description"):
        raise OFAError(f"ofa.save expects a supernet or an extracted network, got {type(net).__name__}")
    description = net.description() if callable(net.description) else net.description
    description = dict(description, format=FORMAT, versions=_versions())
    weights_path, json_path = _paths(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "description_sha256": _digest(description)}
    atomic_write(weights_path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata))
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(description, indent=2)))
    return weights_path


def _versions() -> dict[str, str]:
    import timm

    from . import __version__

    return {"ofa": __version__, "torch": torch.__version__.split("+")[0], "timm": timm.__version__}


def read_json(path: str | os.PathLike, error: type[OFAError] = OFAError,
              hint: str = "it may be truncated or corrupt") -> Any:
    """Parse a JSON file the user gave us, turning a broken file into one clear ``error`` line."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); {hint}") from None


def read_yaml(path: str | os.PathLike, error: type[OFAError] = OFAError) -> Any:
    """Safe-load a YAML file the user gave us; a syntax error becomes one line naming where it is."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise error(f"{path} is not valid YAML{where}: {problem}") from None


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    _, json_path = _paths(path)
    if not json_path.is_file():
        raise WeightsError(f"no description file {json_path} (expected beside the .safetensors weights)")
    description = read_json(json_path, WeightsError)
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise WeightsError(f"{json_path} is not an ofa network description (format {FORMAT!r} expected)")
    return description


def build(description: dict[str, Any]) -> nn.Module:
    """Construct (with fresh weights) the network a description names."""
    kind = description.get("kind")
    if kind == "supernet":
        cls = family_class(description["family"])
        return cls(name=description.get("name"), data_config=description.get("data_config"),
                   origin=description.get("origin"), **description["config"])
    if kind == "static":
        return static_class(description["family"])(description)
    raise WeightsError(f"unknown network kind {kind!r} in description; expected 'supernet' or 'static'")


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load what :func:`save` wrote: a supernet (with its largest arch active) or an extracted network."""
    weights_path, json_path = _paths(path)
    if not weights_path.is_file():
        raise WeightsError(f"no weights file {weights_path}")
    description = read_description(path)
    try:
        with safetensors.safe_open(str(weights_path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = safetensors.torch.load_file(str(weights_path), device=str(map_location))
    except Exception as e:  # safetensors raises several types for truncated or foreign files
        raise WeightsError(f"{weights_path} is not a readable safetensors file ({type(e).__name__}: {e}); "
                           "it may be truncated or corrupt") from None
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{weights_path} was not written by ofa.save (no {FORMAT!r} format tag)")
    if metadata.get("description_sha256") != _digest(description):
        raise WeightsError(f"{weights_path} and {json_path} do not belong together: the weights were saved "
                           "with another description")
    net = build(description)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise WeightsError(f"{weights_path} does not match its description: {what} "
                           f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    for key, t in expected.items():
        if tuple(tensors[key].shape) != tuple(t.shape):
            raise WeightsError(f"{weights_path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                               f"the description needs {tuple(t.shape)}")
    net.load_state_dict(tensors)
    return net.to(map_location).eval()
