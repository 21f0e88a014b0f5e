"""The evaluator's prediction net: a static copy of the subnet with BN folded into its convs gives
the recalibrated supernet's heatmaps (max abs difference <= 1e-4 on heatmaps of magnitude ~1, float32
rounding of the folded weights) and leaves the evaluator's AP unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasplat.nn.elastic import ConvBN
from nasplat.subnet.inference import fold_batchnorm, inference_copy

ATOL = 1e-4


def _archs(space):  # noqa: ANN001, ANN202
    rng = np.random.default_rng(7)
    return [space.min_arch(), space.max_arch(), *(space.sample(rng) for _ in range(3))]


def _flat(metrics):  # noqa: ANN001, ANN202
    return {f"{part}.{k}": v for part, values in metrics.items() for k, v in values.items()}


@pytest.fixture(scope="module")
def evaluator(trained_tiny):
    from nasplat.subnet.evaluator import SubnetEvaluator

    return SubnetEvaluator(trained_tiny)


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("dense", [False, True])
def test_a_folded_conv_bn_computes_what_conv_then_bn_does_in_eval(groups: int, dense: bool):
    g = torch.Generator().manual_seed(groups)
    conv = nn.Conv2d(8, 12, 3, padding=1, groups=groups, bias=False)
    bn = nn.BatchNorm2d(12)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        bn.weight.copy_(torch.rand(12, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(12, generator=g))
        bn.running_mean.copy_(torch.randn(12, generator=g))
        bn.running_var.copy_(torch.rand(12, generator=g) * 3 + 1e-3)  # some near-zero variances
    block = ConvBN(conv, bn, relu=True).eval()
    x = torch.randn(2, 8, 9, 7, generator=g)
    with torch.no_grad():
        want = block(x)
        folded = fold_batchnorm(block, dense_small_groups=dense)
        got = folded(x)
    assert isinstance(folded.bn, nn.Identity) and folded.conv.bias is not None
    assert folded.conv.groups == (1 if dense else groups)
    torch.testing.assert_close(got, want, atol=ATOL * float(want.abs().max()), rtol=0)


@pytest.mark.parametrize("dense", [False, True])
def test_the_folded_static_copy_gives_the_recalibrated_supernets_heatmaps(evaluator, trained_tiny, dense: bool):
    from nasplat.data.scaling import resize_batch

    net = evaluator.net
    for arch in _archs(trained_tiny.space):
        evaluator.recalibrate(arch)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        x = resize_batch(evaluator.val.images, arch.body.input_size)  # [N, 3, H, W]
        net.eval()
        with torch.no_grad():
            want = net(x)
            copy = inference_copy(net, arch, dense_small_groups=dense)
            got = copy(x, part_boxes=None)
        net.train()
        assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())  # every BN was folded
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the supernet is untouched
        torch.testing.assert_close(got.body_heatmaps, want.body_heatmaps, atol=ATOL, rtol=0)
        torch.testing.assert_close(got.boxes, want.boxes)  # decoded from those heatmaps: the same boxes
        torch.testing.assert_close(got.face_heatmaps, want.face_heatmaps, atol=ATOL, rtol=0)
        torch.testing.assert_close(got.hand_heatmaps, want.hand_heatmaps, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dense", [False, True])
def test_folding_while_copying_gives_what_folding_the_extracted_subnet_gives(evaluator, trained_tiny, dense: bool):
    net = evaluator.net
    for arch in _archs(trained_tiny.space)[1:3]:
        evaluator.recalibrate(arch)
        copy = inference_copy(net, arch, dense_small_groups=dense)  # BN folded as each conv is copied
        want = fold_batchnorm(net.extract(arch), dense_small_groups=dense)  # BN copied, then folded
        got = copy.state_dict()
        assert list(got) == list(want.state_dict())
        assert all(torch.equal(got[k], v) for k, v in want.state_dict().items())
        assert not copy.training and not any(p.requires_grad for p in copy.parameters())


def test_the_evaluators_ap_is_the_same_as_with_the_supernet(evaluator, trained_tiny):
    from nasplat.subnet.evaluator import SubnetEvaluator

    reference = SubnetEvaluator(trained_tiny, net=evaluator.net, static_predict=False)
    for arch in _archs(trained_tiny.space)[:3]:
        for flip in (False, True):
            got = evaluator.evaluate(arch, flip_test=flip)
            want = reference.evaluate(arch, flip_test=flip)
            assert _flat(got["metrics"]) == pytest.approx(_flat(want["metrics"]), abs=1e-9)
            evaluator.recalibrate(arch)
            kp_got, sc_got = evaluator.predict(arch, flip_test=flip)
            kp_want, sc_want = reference.predict(arch, flip_test=flip)
            np.testing.assert_allclose(kp_got, kp_want, atol=1e-3)  # image pixels and scores
            np.testing.assert_allclose(sc_got, sc_want, atol=1e-4)
