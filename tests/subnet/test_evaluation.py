from __future__ import annotations

import json

import pytest
import torch

from nasplat.errors import ArchError, TrainingError


@pytest.fixture(scope="module")
def evaluator(trained_tiny):
    from nasplat.subnet.evaluator import SubnetEvaluator

    torch.set_num_threads(1)
    return SubnetEvaluator(trained_tiny)


def _bn_state(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k}


def test_evaluate_reports_every_part_the_gflops_and_params(evaluator, trained_tiny):
    result = evaluator.evaluate(trained_tiny.space.min_arch())
    assert set(result["metrics"]) == {"body", "foot", "face", "hand", "wholebody"}
    for values in result["metrics"].values():
        assert 0.0 <= values["AP"] <= 1.0 and 0.0 <= values["AR"] <= 1.0
    g = result["gflops"]
    assert g["total"] == pytest.approx(g["body"] + g["face"] + 2 * g["hand"])
    assert result["params"] > 0


def test_a_val_cap_keeps_whole_images_and_scores_only_them(trained_tiny):
    from nasplat.subnet.evaluator import SubnetEvaluator

    capped = SubnetEvaluator(trained_tiny, net=SubnetEvaluator(trained_tiny).net, max_images=3)
    ids = capped.val.image_id.tolist()
    assert 0 < len(ids) <= 3 or len(set(ids)) == 1
    assert capped.val_image_ids == sorted(set(ids))
    gt = [a for a in capped.evaluator.gt.annotations if a.image_id in set(ids) and not a.iscrowd]
    assert len(ids) == len(gt)  # every person of a kept image is predicted on
    result = capped.evaluate(trained_tiny.space.max_arch())
    assert 0.0 <= result["metrics"]["wholebody"]["AR"] <= 1.0


def test_evaluation_leaves_the_supernet_bn_statistics_as_they_were(evaluator, trained_tiny):
    before = _bn_state(evaluator.net)
    evaluator.evaluate(trained_tiny.space.max_arch())
    after = _bn_state(evaluator.net)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_recalibration_changes_the_statistics_the_subnet_is_evaluated_with(evaluator, trained_tiny):
    arch = trained_tiny.space.min_arch()
    evaluator.net.set_arch(arch)
    before = _bn_state(evaluator.net)
    evaluator.recalibrate(arch)
    after = _bn_state(evaluator.net)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_an_arch_outside_the_space_is_an_arch_error(evaluator, trained_tiny):
    import dataclasses

    arch = trained_tiny.space.max_arch()
    bad = dataclasses.replace(arch, body=dataclasses.replace(arch.body, resolution=80))
    with pytest.raises(ArchError):
        evaluator.evaluate(bad)


def test_no_checkpoint_is_a_training_error_naming_the_command(tmp_path, tiny_experiment):
    from nasplat.config import load_experiment
    from nasplat.subnet.evaluator import SubnetEvaluator

    experiment = load_experiment(tiny_experiment(tmp_path / "fresh"))
    with pytest.raises(TrainingError, match="nasplat train"):
        SubnetEvaluator(experiment)


def test_exported_subnet_loads_without_the_supernet_and_matches_it(tmp_path, trained_tiny):
    from nasplat.subnet.evaluator import SubnetEvaluator
    from nasplat.subnet.export import export_subnet, load_exported

    arch = trained_tiny.space.min_arch()
    meta = export_subnet(trained_tiny, arch, tmp_path / "min", latency=None)
    assert json.loads((tmp_path / "min" / "arch.json").read_text()) == arch.to_flat()
    assert meta["gflops"]["total"] > 0

    static = load_exported(tmp_path / "min")
    assert static.arch == arch
    reference = SubnetEvaluator(trained_tiny, load_val=False)
    reference.recalibrate(arch)
    reference.net.eval()
    x = torch.randn(2, 3, *arch.body.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference.net(x)
        got = static(x)
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b)


def test_loading_a_directory_that_is_not_an_export_is_a_config_error(tmp_path):
    from nasplat.errors import ConfigError
    from nasplat.subnet.export import load_exported

    with pytest.raises(ConfigError, match="arch.json"):
        load_exported(tmp_path)
