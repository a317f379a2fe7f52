import pytest
import torch
import torch.nn.functional as F

import ofa


def test_calibration_sets_the_statistics_of_the_calibration_batches(tiny):
    arch = tiny.space.sample(3)
    static = tiny.extract(arch).eval()
    batches = [torch.randn(32, 1, arch.resolution, arch.resolution) * 3 + 2 for _ in range(2)]
    ofa.calibrate_bn(static, batches)
    assert not static.training and not static.bn1.training  # modes as they were
    with torch.no_grad():
        feats = [F.conv2d(b, static.conv1.weight, None, 1, 1) for b in batches]
    means = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)  # cumulative average of batch means
    variances = torch.stack([f.transpose(0, 1).flatten(1).var(1, unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(static.bn1.running_mean, means, atol=1e-4)
    assert torch.allclose(static.bn1.running_var, variances, rtol=1e-3)


def test_context_form_restores_the_supernet_statistics(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    arch = tiny.space.sample(4)
    batches = [torch.randn(16, 1, arch.resolution, arch.resolution) for _ in range(2)]
    x = batches[0]
    with tiny.active(arch):
        with torch.no_grad():
            uncalibrated = tiny(x)
        with ofa.calibrate_bn(tiny, batches, num_batches=1):
            assert not torch.equal(tiny.bn1.running_mean, before["bn1.running_mean"])
            with torch.no_grad():
                calibrated = tiny(x)
    assert not torch.allclose(uncalibrated, calibrated)
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not tiny.training


def test_calibrated_supernet_equals_calibrated_extraction(tiny):
    arch = tiny.space.sample(8)
    batches = [torch.randn(16, 1, arch.resolution, arch.resolution) for _ in range(3)]
    static = tiny.extract(arch, calib_batches=batches).eval()
    x = torch.randn(4, 1, arch.resolution, arch.resolution)
    with tiny.active(arch), ofa.calibrate_bn(tiny, batches), torch.no_grad():
        assert (tiny(x) - static(x)).abs().max().item() <= 1e-5


def test_only_the_largest_arch_updates_stored_statistics_in_training(tiny):
    tiny.train()
    stored = tiny.bn1.running_mean.clone()
    small = tiny.space.smallest()
    with tiny.active(small):
        tiny(torch.randn(8, 1, small.resolution, small.resolution))
    assert torch.equal(tiny.bn1.running_mean, stored)
    large = tiny.space.largest()
    tiny(torch.randn(8, 1, large.resolution, large.resolution))
    assert not torch.equal(tiny.bn1.running_mean, stored)


def test_no_batches_is_a_clear_error_and_changes_nothing(tiny):
    before = tiny.bn1.running_mean.clone()
    with pytest.raises(ofa.OFAError, match="got no batches"):
        ofa.calibrate_bn(tiny, [])
    assert torch.equal(tiny.bn1.running_mean, before)
    with pytest.raises(ofa.OFAError, match="num_batches must be a positive integer"):
        ofa.calibrate_bn(tiny, [torch.zeros(1)], num_batches=0)
