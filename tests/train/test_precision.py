"""The precision switch: what `auto` resolves to, elastic ops keeping static-equals-supernet under
bf16 autocast, and a sandwich step under bf16 / fp16 / channels_last leaving fp32 gradients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from nasplat.config import load_experiment
from nasplat.errors import ConfigError
from nasplat.models import create_model
from nasplat.space import load_space
from nasplat.train.precision import Precision
from nasplat.train.sandwich import SandwichSampler
from tests.models.test_zoomnet import _archs, _randomize_bn

ROOT = Path(__file__).resolve().parents[2]
SPACE = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
BF16_ULP = 2.0**-7  # one unit in the last place of bf16 at magnitude 1


def test_auto_is_bf16_on_cuda_and_fp32_on_cpu() -> None:
    assert Precision.for_device("auto", "cuda:0") == Precision("bf16", "cuda")
    assert Precision.for_device("auto", "cpu") == Precision("fp32", "cpu")
    assert Precision.for_device("fp16", "cpu").grad_scaler() is not None
    assert Precision.for_device("bf16", "cuda").grad_scaler() is None
    assert Precision.for_device("fp32", "cpu").dtype is None


def test_a_recipe_precision_outside_the_choices_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nprecision: fp8\n")
    from nasplat.config import load_trainer

    with pytest.raises(ConfigError, match="precision"):
        load_trainer(path)


@pytest.mark.parametrize(("label", "arch"), _archs()[:2] + _archs()[-1:], ids=["max", "min", "odd-random"])
def test_static_subnet_equals_supernet_under_bf16_autocast(label: str, arch) -> None:  # noqa: ANN001
    """Tolerance: one bf16 ulp at the output's magnitude (measured: bit-identical on CPU)."""
    net = create_model("zoomnet", SPACE, seed=0)
    _randomize_bn(net, 0)
    net.eval().set_arch(arch)
    static = net.extract(arch).eval()
    h, w = arch.body.input_size
    images = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    bf16 = Precision.for_device("bf16", "cpu")
    with torch.no_grad(), bf16.autocast():
        out, ref = net(images), static(images)
    assert out.body_heatmaps.dtype == torch.bfloat16  # autocast did take effect
    assert out.boxes.dtype == torch.float32  # boxes are decoded in fp32
    for got, want in zip(out, ref):
        tol = BF16_ULP * max(1.0, want.float().abs().max().item())
        assert (got.float() - want.float()).abs().max().item() <= tol


def _experiment(tiny_experiment, tmp_path: Path):  # noqa: ANN001, ANN202
    return load_experiment(tiny_experiment(tmp_path))


@pytest.mark.parametrize("name,channels_last", [("bf16", False), ("bf16", True)])
def test_a_sandwich_step_under_autocast_leaves_finite_fp32_gradients(tiny_experiment, tmp_path, name, channels_last) -> None:  # noqa: ANN001
    from nasplat.data.topdown import collate
    from nasplat.train.data import train_dataset
    from nasplat.train.step import sandwich_step

    exp = _experiment(tiny_experiment, tmp_path)
    ds = train_dataset(exp)
    batch = collate([ds[i] for i in range(2)])
    precision = Precision.for_device(name, "cpu", channels_last=channels_last)
    net = precision.module(create_model("zoomnet", exp.space, seed=0))
    members = SandwichSampler(exp.space, 0, 1).members(0)
    logs = sandwich_step(net, batch, members, exp.trainer, epoch=5, precision=precision)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_with_a_scaler_every_member_backwards_its_scaled_loss(tiny_experiment, tmp_path) -> None:  # noqa: ANN001
    from nasplat.data.topdown import collate
    from nasplat.train.data import train_dataset
    from nasplat.train.step import sandwich_step

    exp = _experiment(tiny_experiment, tmp_path)
    ds = train_dataset(exp)
    batch = collate([ds[i] for i in range(2)])
    fp16 = Precision.for_device("fp16", "cpu")
    net = create_model("zoomnet", exp.space, seed=0)
    members = SandwichSampler(exp.space, 0, 1).members(0)
    grads = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=4.0)):
        net.zero_grad(set_to_none=True)
        sandwich_step(net, batch, members, exp.trainer, epoch=5, precision=fp16, scaler=scaler)
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    plain, scaled = grads
    assert plain.keys() == scaled.keys() and plain
    # Not elementwise: without the scale, fp16's tiny gradients underflow, which is why it exists.
    a = torch.cat([plain[k].flatten() for k in plain])
    b = torch.cat([scaled[k].flatten() for k in plain])
    assert 3.8 <= (b.norm() / a.norm()).item() <= 4.2
    assert torch.nn.functional.cosine_similarity(a, b, dim=0).item() >= 0.99


def test_the_trainer_resolves_the_recipe_precision(tiny_experiment, tmp_path) -> None:  # noqa: ANN001
    from nasplat.data.topdown import collate
    from nasplat.train.loop import SupernetTrainer

    exp = _experiment(tiny_experiment, tmp_path)
    exp16 = dataclasses.replace(exp, trainer=dataclasses.replace(exp.trainer, precision="fp16"))
    trainer = SupernetTrainer(exp16)
    assert trainer.precision == Precision("fp16", "cpu") and trainer.scaler is not None
    loader = torch.utils.data.DataLoader(trainer.dataset, batch_sampler=trainer._batches(0, 0), collate_fn=collate)
    logs = trainer.train_step(next(iter(loader)))
    assert torch.isfinite(torch.tensor(logs["total"])) and trainer.step == 1
    assert "scaler" in trainer._payload() and trainer._payload()["scaler"] is not None
    assert SupernetTrainer(exp).scaler is None
