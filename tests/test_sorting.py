import pytest
import torch

import ofa


@pytest.mark.parametrize("criterion", ["l1", "bn", "taylor", "fpgm"])
def test_sorting_leaves_the_largest_network_unchanged(supernet, criterion):
    # float64: a permutation changes the float32 summation order (~1e-6 relative), not the function.
    supernet.double()
    largest = supernet.space.largest()
    supernet.set_active(largest)
    x = torch.randn(4, supernet.in_chans, largest.resolution, largest.resolution, dtype=torch.float64)
    batches = [(torch.randn(4, supernet.in_chans, largest.resolution, largest.resolution, dtype=torch.float64),
                torch.randint(0, supernet.num_classes, (4,))) for _ in range(2)]
    state = {k: v.clone() for k, v in supernet.state_dict().items()}

    def outputs():
        # A train-mode forward at the largest arch updates running statistics: undo it afterwards.
        saved = {k: v.clone() for k, v in supernet.state_dict().items()}
        with torch.no_grad():
            y_eval = supernet.eval()(x)
            y_train = supernet.train()(x)
        supernet.load_state_dict(saved)
        supernet.eval()
        return y_eval, y_train

    before_eval, before_train = outputs()
    perms = ofa.sort_channels(supernet, criterion, batches=batches)
    assert any(p != sorted(p) for p in perms.values())  # something really moved
    after_eval, after_train = outputs()
    assert (after_eval - before_eval).abs().max().item() <= 1e-5
    assert (after_train - before_train).abs().max().item() <= 1e-5
    changed = [k for k, v in supernet.state_dict().items() if not torch.equal(v, state[k])]
    assert changed


def test_after_sorting_importance_is_descending(tiny):
    ofa.sort_channels(tiny, "l1")
    for group, score in ofa.channel_importance(tiny, "l1"):
        assert torch.all(score[:-1] >= score[1:] - 1e-6), group.name


def test_sorting_changes_what_a_narrow_subnet_keeps(tiny):
    arch = tiny.space.smallest()
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    with tiny.active(arch), torch.no_grad():
        before = tiny(x)
        ofa.sort_channels(tiny, "l1")
        assert not torch.allclose(before, tiny(x))


def test_groups_cover_residual_ties(tiny):
    names = [g.name for g in tiny.channel_groups()]
    assert names.count("stem") == 1 and "stage1" in names and "stage2" in names
    last = [g for g in tiny.channel_groups() if g.name == "stage2"][0]
    assert tiny.fc in last.consumers
    assert len(last.producers) == 3  # the projection and both blocks' last convolutions


def test_bad_criterion_and_taylor_without_batches_are_clear_errors(tiny):
    with pytest.raises(ofa.OFAError, match="unknown channel-importance criterion 'l2'"):
        ofa.sort_channels(tiny, "l2")
    with pytest.raises(ofa.OFAError, match="needs batches"):
        ofa.sort_channels(tiny, "taylor")
