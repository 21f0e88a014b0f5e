import torch
from torch import nn

from nasplat.subnet.bn import recalibrate_bn


def test_recalibration_is_the_true_average_of_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.1))
    model.eval()
    batches = [torch.randn(8, 3, 10, 10) * (i + 1) + i for i in range(5)]
    used = recalibrate_bn(model, batches)
    assert used == 5

    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    # The caller's settings come back.
    assert bn.momentum == 0.1
    assert not model.training and not bn.training


def test_recalibration_forgets_stale_statistics_and_respects_num_batches():
    model = nn.BatchNorm1d(3)
    model.running_mean.fill_(100.0)
    batches = [torch.ones(4, 3) * k + torch.arange(4.0)[:, None] for k in range(10)]
    used = recalibrate_bn(model, batches, num_batches=2)
    assert used == 2
    # mean of per-batch means over batches 0 and 1: (1.5 + 2.5) / 2
    torch.testing.assert_close(model.running_mean, torch.full((3,), 2.0))
    assert model.training  # it was in train mode before
