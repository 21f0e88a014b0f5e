"""The elastic MobileNetV3 supernet: static subnets equal the supernet, gradients reach only the
active weights, OFA's kernel transformation, the analytic counts, and the config round trip."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasplat.errors import ArchError, ConfigError
from nasplat.models.registry import create_model
from nasplat.tasks.classification.flops import analytic_gflops, analytic_macs, analytic_params
from nasplat.tasks.classification.model import (
    ElasticDepthwiseConv2d,
    MobileNetV3,
    MobileNetV3Config,
    MobileNetV3Supernet,
    mobilenetv3,
)
from nasplat.tasks.classification.space import (
    BlockArch,
    ClassificationSpace,
    MobileNetArch,
    load_classification_space,
    mid_channels,
)
from tests.conftest import one_torch_thread

# module scope: it must also cover the module-scoped supernet fixtures built before each test
_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

ROOT = Path(__file__).resolve().parents[3]
NUM_CLASSES = 10


@pytest.fixture(scope="module")
def space() -> ClassificationSpace:
    return load_classification_space(ROOT / "search_spaces" / "classification" / "quickstart.yaml")


@pytest.fixture(scope="module")
def trained(space: ClassificationSpace) -> MobileNetV3Supernet:
    """A supernet whose BN statistics and kernel-transform matrices are no longer their initial
    values, so that copying the wrong slice of them would show."""
    torch.manual_seed(0)
    net = mobilenetv3(space, seed=0, num_classes=NUM_CLASSES)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.05 * torch.randn_like(p))
        net.train()
        rng = np.random.default_rng(0)
        for _ in range(3):
            arch = space.sample(rng)
            net.set_arch(arch)
            net(torch.randn(4, 3, arch.resolution, arch.resolution))
    net.set_arch(space.max_arch())
    return net


def _archs(space: ClassificationSpace, n: int, seed: int) -> list[MobileNetArch]:
    rng = np.random.default_rng(seed)
    return [space.max_arch(), space.min_arch(), *(space.sample(rng) for _ in range(n))]


def _uniform(space: ClassificationSpace, depth: int, kernel: int, expand: int, resolution: int = 32) -> MobileNetArch:
    return MobileNetArch(resolution, ((BlockArch(kernel, expand),) * depth,) * space.num_stages)


# --- static subnets ------------------------------------------------------------------------------
def test_static_subnet_equals_the_supernet(space: ClassificationSpace, trained: MobileNetV3Supernet) -> None:
    trained.eval()
    for arch in _archs(space, 4, seed=1):
        static = trained.extract(arch)
        assert isinstance(static, MobileNetV3) and static.arch == arch and not static.training
        x = torch.randn(2, 3, arch.resolution, arch.resolution)
        trained.set_arch(arch)
        with torch.no_grad():
            expected = trained(x)
            got = static(x)
        assert expected.shape == (2, NUM_CLASSES)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_static_subnet_equals_the_supernet_in_train_mode(
    space: ClassificationSpace, trained: MobileNetV3Supernet
) -> None:
    arch = space.sample(np.random.default_rng(5))
    trained.train()
    static = trained.extract(arch)
    assert static.training
    x = torch.randn(4, 3, arch.resolution, arch.resolution)
    trained.set_arch(arch)
    outputs = []
    for net in (trained, static):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(1)  # the same dropout mask
            outputs.append(net(x))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=0)
    trained.eval()


def test_static_subnet_has_only_plain_layers(space: ClassificationSpace, trained: MobileNetV3Supernet) -> None:
    static = trained.extract(space.sample(np.random.default_rng(2)))
    plain = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Hardswish, nn.Hardsigmoid, nn.Dropout)
    leaves = [m for m in static.modules() if not list(m.children())]
    assert all(type(m) in plain for m in leaves), {type(m).__name__ for m in leaves}
    assert not any("transforms" in name for name, _ in static.named_parameters())


def test_extract_leaves_the_active_arch(space: ClassificationSpace, trained: MobileNetV3Supernet) -> None:
    trained.set_arch(space.max_arch())
    trained.extract(space.min_arch())
    assert trained.arch == space.max_arch()
    with pytest.raises(ArchError, match="set_arch"):
        MobileNetV3Supernet(MobileNetV3Config.from_space(space, NUM_CLASSES)).extract()


def test_any_input_resolution_runs(trained: MobileNetV3Supernet) -> None:
    with torch.no_grad():
        assert trained.eval()(torch.randn(1, 3, 20, 20)).shape == (1, NUM_CLASSES)


# --- arch checks ---------------------------------------------------------------------------------
def test_set_arch_rejects_archs_outside_the_supernet(space: ClassificationSpace, trained: MobileNetV3Supernet) -> None:
    good = space.max_arch()
    trained.set_arch(good)
    stages = list(good.stages)
    cases = {
        "stage2.block1.kernel": MobileNetArch(32, (stages[0], (BlockArch(9, 6), *stages[1][1:]), *stages[2:])),
        "stage1.block2.expand": MobileNetArch(32, ((stages[0][0], BlockArch(7, 8)), *stages[1:])),
        "stage3.depth": MobileNetArch(32, (*stages[:2], stages[2] * 2, *stages[3:])),
        "stages": MobileNetArch(32, tuple(stages[:4])),
        "resolution": MobileNetArch(0, good.stages),
    }
    for key, arch in cases.items():
        with pytest.raises(ArchError) as e:
            trained.set_arch(arch)
        assert e.value.key == key
        assert trained.arch == good


# --- elastic weights -----------------------------------------------------------------------------
def test_kernel_transforms_start_as_identity() -> None:
    conv = ElasticDepthwiseConv2d(16, (3, 5, 7))
    for name, matrix in conv.transforms.items():
        small = int(name.split("to")[1])
        torch.testing.assert_close(matrix, torch.eye(small * small))
    conv.set_active(8, 5)
    torch.testing.assert_close(conv.active_weight(), conv.weight[:8, :, 1:6, 1:6])
    conv.set_active(8, 3)
    torch.testing.assert_close(conv.active_weight(), conv.weight[:8, :, 2:5, 2:5])


def test_small_kernels_are_transformed_centre_crops() -> None:
    torch.manual_seed(0)
    conv = ElasticDepthwiseConv2d(6, (3, 5, 7))
    with torch.no_grad():
        for matrix in conv.transforms.values():
            matrix.add_(0.1 * torch.randn_like(matrix))
    w = conv.weight.detach()
    m75, m53 = conv.transforms["7to5"].detach(), conv.transforms["5to3"].detach()
    # per channel: the centre crop, flattened, times the matrix (OFA's F.linear, x @ M^T)
    k5 = (w[:, 0, 1:6, 1:6].reshape(6, 25) @ m75.T).view(6, 5, 5)
    k3 = (k5[:, 1:4, 1:4].reshape(6, 9) @ m53.T).view(6, 3, 3)
    conv.set_active(6, 3)
    torch.testing.assert_close(conv.active_weight().detach(), k3[:, None])
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(conv(x), F.conv2d(x, k3[:, None], padding=1, groups=6))
    with pytest.raises(ArchError):
        conv.set_active(6, 4)
    with pytest.raises(ArchError):
        conv.set_active(7, 3)


def test_gradients_reach_only_active_weights(space: ClassificationSpace) -> None:
    net = mobilenetv3(space, seed=1, num_classes=NUM_CLASSES).train()
    arch = _uniform(space, depth=2, kernel=3, expand=3)
    net.set_arch(arch)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    cin = net.config.stage_inputs()[1]  # stage 2's first block reads the stage-1 output
    block = net.stages[1][0]
    mid, full = mid_channels(cin, 3), mid_channels(cin, 6)
    assert mid < full
    expand_grad = block.expand.conv.weight.grad
    assert expand_grad[:mid].abs().sum() > 0 and expand_grad[mid:].abs().sum() == 0
    dw_grad = block.depthwise.conv.weight.grad  # [full, 1, 7, 7]
    assert dw_grad[:mid, :, 1:6, 1:6].abs().sum() > 0
    ring = dw_grad.clone()
    ring[:, :, 1:6, 1:6] = 0
    assert ring.abs().sum() == 0  # kernel 3 comes from the centre 5x5, through the 7to5 matrix
    assert dw_grad[mid:].abs().sum() == 0
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in block.depthwise.conv.transforms.values())
    assert block.se.reduce.weight.grad[:, mid:].abs().sum() == 0  # stage 2 has squeeze-excite
    for stage in net.stages:
        for inactive in stage[2:]:
            assert all(p.grad is None for p in inactive.parameters())


def test_largest_kernel_leaves_the_transforms_alone(space: ClassificationSpace) -> None:
    net = mobilenetv3(space, seed=1, num_classes=NUM_CLASSES).train()
    net.set_arch(_uniform(space, depth=4, kernel=7, expand=6))
    net(torch.randn(2, 3, 24, 24)).sum().backward()
    assert all(p.grad is None for name, p in net.named_parameters() if "transforms" in name)
    assert all(p.grad is not None for name, p in net.named_parameters() if "transforms" not in name)


# --- builder and config --------------------------------------------------------------------------
def test_builder_is_registered_seeded_and_leaves_the_global_rng(space: ClassificationSpace) -> None:
    state = torch.random.get_rng_state()
    a = create_model("mobilenetv3", space, seed=3, num_classes=NUM_CLASSES)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = mobilenetv3(space, seed=3, num_classes=NUM_CLASSES)
    c = mobilenetv3(space, seed=4, num_classes=NUM_CLASSES)
    assert isinstance(a, MobileNetV3Supernet) and a.arch == space.max_arch()
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_config_round_trips_through_json(space: ClassificationSpace, trained: MobileNetV3Supernet) -> None:
    config = MobileNetV3Config.from_space(space, NUM_CLASSES, dropout=0.2)
    assert MobileNetV3Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    rebuilt = MobileNetV3Supernet(MobileNetV3Config.from_dict(trained.config.to_dict()))
    rebuilt.load_state_dict(trained.state_dict())  # same names and shapes
    with pytest.raises(ConfigError) as e:
        MobileNetV3Config.from_dict(config.to_dict() | {"width": 2})
    assert e.value.key == "width"
    with pytest.raises(ConfigError):
        MobileNetV3Config.from_dict(config.to_dict() | {"stage_strides": [2, 2]})
    assert MobileNetV3Config() == MobileNetV3Config.from_space(
        load_classification_space(ROOT / "search_spaces" / "classification" / "ofa_mbv3.yaml"), 1000
    )


# --- analytic counts -----------------------------------------------------------------------------
def _fvcore_macs(model: nn.Module, resolution: int) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore traces with torch.jit, which warns in recent torch
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, torch.zeros(1, 3, resolution, resolution))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        # fvcore counts one multiply-add as one flop for conv and linear; BN is left out
        return sum(v for op, v in analysis.by_operator().items() if op in ("conv", "linear", "addmm", "matmul"))


def test_analytic_counts_match_fvcore_and_numel(space: ClassificationSpace, trained: MobileNetV3Supernet) -> None:
    trained.eval()
    for arch in _archs(space, 3, seed=7):
        static = trained.extract(arch)
        macs = analytic_macs(arch, trained.config)
        assert macs == _fvcore_macs(static, arch.resolution)
        assert macs == analytic_macs(arch, space, NUM_CLASSES)
        assert analytic_gflops(arch, space, NUM_CLASSES) == macs / 2**30
        params = analytic_params(arch, trained.config)
        assert params == sum(p.numel() for p in static.parameters())
        assert params == analytic_params(arch, space, NUM_CLASSES)


def test_analytic_counts_are_ofas_on_the_ofa_space() -> None:
    """Parameters and MACs that OFA's own `OFAMobileNetV3.get_active_subnet` gives (measured with
    OFA's code and its `count_net_flops`, 1000 classes, 224 px max / 128 px min)."""
    ofa = load_classification_space(ROOT / "search_spaces" / "classification" / "ofa_mbv3.yaml")
    assert analytic_params(ofa.max_arch(), ofa) == 7_664_760
    assert analytic_params(ofa.min_arch(), ofa) == 3_410_792
    assert analytic_macs(ofa.min_arch(), ofa) == 41_476_224
    assert analytic_macs(ofa.max_arch(), ofa) == pytest.approx(566_170_688, abs=64)  # OFA sums in float32
