import itertools
import json

import pytest

import ofa
from ofa import ArchError
from ofa.space import SearchSpace


@pytest.fixture
def space():
    return ofa.create_supernet("ofa_resnet_tiny").space


def test_sample_is_deterministic_and_inside_the_space(space):
    assert space.sample(3) == space.sample(3)
    archs = {space.sample(i) for i in range(50)}
    assert len(archs) > 40
    for arch in archs:
        assert space.contains(arch)
        assert all(len(e) == d for e, d in zip(arch.expands, arch.depths))


def test_largest_and_smallest_take_the_extreme_choices(space):
    large, small = space.largest(), space.smallest()
    assert large.resolution == max(space.resolutions) and small.resolution == min(space.resolutions)
    assert large.depths == space.max_depths
    assert all(e == (max(space.expands[s]),) * large.depths[s] for s, e in enumerate(large.expands))
    assert small.widths == tuple(min(w) for w in space.widths)


def test_json_round_trip(space):
    for i in range(50):
        arch = space.sample(i)
        text = json.dumps(arch.to_dict())
        again = space.arch_from_dict(json.loads(text))
        assert again == arch and again.key() == arch.key()
        assert space.arch_from_json(arch.to_json()) == arch


def test_space_json_round_trip():
    for name in ofa.list_supernets():
        cls, config = ofa.registry.supernet_entry(name)
        space = cls.make_plan(**config).space
        assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(resolution=17), "resolution=17 is not allowed; allowed: [16, 20, 24, 28, 32]"),
    (lambda d: d.update(depths=[2, 2]), "depths must be a list with one entry per stage (3 stages)"),
    (lambda d: d.update(widths=[1.0, 0.5, 1.0]), "widths[1]=0.5 is not allowed; allowed: [0.65, 0.8, 1.0]"),
    (lambda d: d.update(expands=[[1.0], [1.0, 1.0], [1.0, 1.0]]), "expands[0] has 1 values but depths[0]=2"),
    (lambda d: d.update(depths=["two", 2, 2]), "depths[0] must be a number, got 'two'"),
    (lambda d: d.update(colour="red"), "unknown arch field 'colour'"),
    (lambda d: d.pop("widths"), "arch is missing field 'widths'"),
    (lambda d: d.update(expands=[[1.0, 1.0], 0.5, [1.0, 1.0]]), "expands[1] must be a list"),
    (lambda d: d.update(resolution=True), "resolution must be a number, got True"),
])
def test_invalid_arch_dicts_raise_arch_error_naming_field_and_allowed_values(space, mutate, message):
    d = space.largest().to_dict()
    mutate(d)
    with pytest.raises(ArchError) as info:
        space.arch_from_dict(d)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_non_dict_and_bad_json_are_arch_errors(space):
    with pytest.raises(ArchError, match="must be a JSON object"):
        space.arch_from_dict([1, 2, 3])
    with pytest.raises(ArchError, match="not valid JSON"):
        space.arch_from_json("{resolution: 28")


def test_residual_width_is_one_choice_per_stage(space):
    d = space.largest().to_dict()
    d["widths"] = [[1.0, 0.8], 1.0, 1.0]  # per-block widths inside a stage cannot be expressed
    with pytest.raises(ArchError, match=r"widths\[0\] must be a number"):
        space.arch_from_dict(d)
    net = ofa.create_supernet("ofa_resnet_tiny")
    for i in range(20):
        spec = net.plan.static_spec(space.sample(i))
        for stage in spec["stages"]:
            assert len({block[2] for block in stage}) == 1  # every block of a stage writes the same stream


def test_choices_that_round_to_the_same_channel_count_are_one_choice():
    for name in ofa.list_supernets():
        cls, config = ofa.registry.supernet_entry(name)
        if cls.family != "resnet":
            continue  # other families test their own channel rules
        plan = cls.make_plan(**config)
        for s, widths in enumerate(plan.space.widths):
            counts = [plan.channels(w, plan.stage_channels[s]) for w in widths]
            assert len(counts) == len(set(counts)), (name, s, widths, counts)
        for s, expands in enumerate(plan.space.expands):
            counts = [plan.mid(s, e) for e in expands]
            assert len(counts) == len(set(counts)), (name, s, expands, counts)
            assert all(c % plan.divisor == 0 for c in counts)


def test_stem_tied_to_first_stage_when_it_has_no_projection():
    r18 = ofa.create_supernet("ofa_resnet18")
    assert r18.space.stem is None and r18.plan.stem_tied
    assert r18.space.widths[0] == (0.8, 0.9, 1.0)  # the stem's floor applies to the tied stage
    r50 = ofa.registry.supernet_entry("ofa_resnet50")
    plan = r50[0].make_plan(**r50[1])
    assert plan.space.stem == (0.8, 0.9, 1.0)
    assert plan.space.depths == ((2, 3, 4), (2, 3, 4), (4, 5, 6), (2, 3, 4))
    assert plan.space.expands[0] == (0.2, 0.25, 0.35)


def test_size_counts_every_arch():
    space = SearchSpace(resolutions=(16, 20), depths=((1, 2), (1,)), widths=((0.5, 1.0), (1.0,)),
                        expands=((0.5, 1.0), (0.25, 0.5, 1.0)))
    archs = set()
    for r, d0, w0, e00, e01, e1 in itertools.product((16, 20), (1, 2), (0.5, 1.0), (0.5, 1.0), (0.5, 1.0),
                                                     (0.25, 0.5, 1.0)):
        expands = ((e00,) if d0 == 1 else (e00, e01), (e1,))
        archs.add(space.arch_from_dict({"resolution": r, "depths": [d0, 1], "widths": [w0, 1.0],
                                        "expands": [list(expands[0]), list(expands[1])]}))
    assert space.size() == len(archs) == 2 * 2 * (2 + 4) * 3


def test_restrict_builds_sub_spaces(space):
    sub = space.restrict(depths=[2], resolutions=[28, 32], expands=[1.0])
    assert sub.depths == ((2,), (2,), (2,)) and sub.resolutions == (28, 32)
    for i in range(20):
        arch = sub.sample(i)
        assert space.contains(arch) and arch.depths == (2, 2, 2)
    per_stage = space.restrict(depths=[[1, 2], [2], [2]])
    assert per_stage.depths == ((1, 2), (2,), (2,))
    with pytest.raises(ArchError, match="none of"):
        space.restrict(widths=[0.1])
    with pytest.raises(ArchError, match="unknown sub-space dimension 'kernel'"):
        space.restrict(kernel=[3])
    with pytest.raises(ArchError, match="no elastic 'kernels'"):
        space.restrict(kernels=[3])


def test_per_block_head_counts_round_trip_nest_and_encode():
    """A transformer-style space: one stage, a head count per active block (nested like expands)."""
    from search.genes import GeneSpace, is_contained

    space = SearchSpace(resolutions=(24, 32), depths=((2, 3),), widths=((0.5, 1.0),), expands=((0.5, 1.0),),
                        heads=((2, 3, 4),))
    assert space.size() == 2 * 2 * ((2 * 3) ** 2 + (2 * 3) ** 3)
    assert space.largest().heads == ((4, 4, 4),) and space.smallest().heads == ((2, 2),)
    archs = {space.sample(i) for i in range(40)}
    for arch in archs:
        assert len(arch.heads[0]) == arch.depths[0]
        assert space.arch_from_json(arch.to_json()) == arch
        assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))).validate(arch.to_dict()) == arch
    with pytest.raises(ArchError, match=r"heads\[0\]\[1\]=5 is not allowed; allowed: \[2, 3, 4\]"):
        space.arch_from_dict({**space.largest().to_dict(), "heads": [[4, 5, 4]]})
    with pytest.raises(ArchError, match="missing field 'heads'"):
        space.arch_from_dict({k: v for k, v in space.largest().to_dict().items() if k != "heads"})
    assert space.restrict(heads=[4]).sample(0).heads == ((4,) * space.restrict(heads=[4]).sample(0).depths[0],)
    assert "head [2, 3, 4]" in space.describe()
    genes = GeneSpace(space)
    assert [g.name for g in genes.genes if g.block == 0] == ["expand0.0", "heads0.0"]
    for arch in archs:
        assert genes.arch_from_genes(genes.genes_from_arch(arch)) == arch
        assert genes.decode(genes.encode([arch])[0]) == arch
    small = space.arch_from_dict({"resolution": 24, "depths": [2], "widths": [1.0], "expands": [[1.0, 1.0]],
                                  "heads": [[2, 4]]})
    large = space.largest()
    assert is_contained(small, large) and not is_contained(large, small)
    inside = genes.contained_in(space.arch_from_dict({**small.to_dict(), "heads": [[3, 4]]}))
    assert inside["heads0.0"].choices == (2, 3) and inside["heads0.1"].choices == (2, 3, 4)
