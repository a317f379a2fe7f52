import json
import os
from pathlib import Path

import pytest
import torch

import ofa


def _outputs(net, arch, seed=0):
    x = torch.randn(2, net.in_chans, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net(x)


def test_supernet_round_trip(tiny, tmp_path):
    path = ofa.save(tiny, tmp_path / "run" / "supernet.safetensors")
    assert path.name == "supernet.safetensors" and (tmp_path / "run" / "supernet.json").is_file()
    again = ofa.load(tmp_path / "run" / "supernet")
    assert again.space == tiny.space and again.name == "ofa_resnet_tiny"
    for i in range(3):
        arch = tiny.space.sample(i)
        tiny.set_active(arch)
        again.set_active(arch)
        assert torch.equal(_outputs(tiny, arch), _outputs(again, arch))
    description = json.loads((tmp_path / "run" / "supernet.json").read_text())
    assert description["family"] == "resnet" and description["versions"]["ofa"] == ofa.__version__


def test_extracted_network_round_trip_without_the_supernet(tiny, tmp_path):
    arch = tiny.space.sample(1)
    static = tiny.extract(arch).eval()
    ofa.save(static, tmp_path / "model.safetensors")
    again = ofa.load(tmp_path / "model.safetensors")
    assert isinstance(again, ofa.StaticNet) and again.description["arch"] == arch.to_dict()
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    with torch.no_grad():
        assert torch.equal(static(x), again(x))


def test_weights_are_safetensors_not_pickle(tiny, tmp_path):
    path = ofa.save(tiny, tmp_path / "s.safetensors")
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_len])
    assert header["__metadata__"]["format"] == "ofa-supernet/1"
    assert not path.read_bytes().startswith(b"PK") and b"\x80\x02" not in path.read_bytes()[:2]


def test_truncated_weights_are_a_clear_error(tiny, tmp_path):
    path = ofa.save(tiny, tmp_path / "s.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ofa.WeightsError, match="not a readable safetensors file"):
        ofa.load(path)


def test_weights_of_another_network_are_refused(tiny, tmp_path):
    ofa.save(tiny, tmp_path / "a.safetensors")
    other = ofa.create_supernet("ofa_resnet_tiny", num_classes=3)
    ofa.save(other, tmp_path / "b.safetensors")
    (tmp_path / "a.json").write_text((tmp_path / "b.json").read_text())
    with pytest.raises(ofa.WeightsError, match="do not belong together"):
        ofa.load(tmp_path / "a.safetensors")


def test_foreign_safetensors_file_is_refused(tmp_path):
    import safetensors.torch

    safetensors.torch.save_file({"w": torch.zeros(3)}, str(tmp_path / "x.safetensors"))
    (tmp_path / "x.json").write_text(json.dumps({"format": "ofa-supernet/1", "kind": "supernet"}))
    with pytest.raises(ofa.WeightsError, match="not written by ofa.save"):
        ofa.load(tmp_path / "x.safetensors")


@pytest.mark.parametrize("content, message", [
    (None, "no weights file"),
    ("{not json", "not valid JSON"),
    ('{"format": "something-else"}', "is not an ofa network description"),
])
def test_missing_or_corrupt_description_is_a_clear_error(tiny, tmp_path, content, message):
    if content is None:
        with pytest.raises(ofa.WeightsError, match=message):
            ofa.load(tmp_path / "nothing.safetensors")
        return
    ofa.save(tiny, tmp_path / "s.safetensors")
    (tmp_path / "s.json").write_text(content)
    with pytest.raises(ofa.WeightsError, match=message):
        ofa.load(tmp_path / "s.safetensors")


def test_save_leaves_no_temporary_files(tiny, tmp_path):
    ofa.save(tiny, tmp_path / "s.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.safetensors"]


def test_written_files_honour_the_umask(tmp_path):
    from ofa.io import atomic_write

    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", lambda tmp: Path(tmp).write_text("{}"))
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # readable by a server process
        os.umask(0o077)
        atomic_write(tmp_path / "b.json", lambda tmp: Path(tmp).write_text("{}"))
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)
