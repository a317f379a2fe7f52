import pytest
import torch

import ofa
from ofa.fold import count_batchnorms, fold_bn
from tests.conftest import randomize_bn


@pytest.mark.parametrize("name", ["ofa_resnet_tiny", "ofa_mbv3_tiny"])
def test_every_batchnorm_folds_and_outputs_stay_equal(name):
    net = randomize_bn(ofa.create_supernet(name)).eval()
    arch = net.space.sample(3)
    static = net.extract(arch).eval()
    folded = fold_bn(static)
    assert count_batchnorms(static) > 0 and count_batchnorms(folded) == 0
    x = torch.randn(2, net.in_chans, arch.resolution, arch.resolution)
    with torch.no_grad():
        assert torch.allclose(static(x), folded(x), atol=1e-5, rtol=1e-4)
