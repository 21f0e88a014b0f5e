"""The Task contract over every registered task, and the platform's training loop on the
classification task (the loop names no task: it asks the registry)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from nasplat.config import load_experiment
from nasplat.errors import ConfigError, TrainingError
from nasplat.orchestration.training import EpochEval
from nasplat.tasks import DEFAULT_TASK, Task, get_task, list_tasks
from nasplat.tasks.base import PHASES
from nasplat.train.checkpoint import load_checkpoint
from nasplat.train.loop import SupernetTrainer, run_training
from tests.tasks.conftest import write_classify_experiment

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list_tasks())
def test_every_registered_task_states_its_contract(name: str) -> None:
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert get_task(name) is task  # one instance per process
    names = [m.name for m in task.metrics]
    assert task.objective in names and len(set(names)) == len(names)
    assert all(m.direction in ("maximize", "minimize") for m in task.metrics)
    assert task.cost_parts[-1] == "total"
    assert dataclasses.is_dataclass(task.data_file)
    assert task.phases <= set(PHASES)
    assert ("search" in task.phases) == bool(task.search_objectives)  # a task that searches says with what


def test_nasplat_ships_zoomnas_and_classification_and_zoomnas_is_the_default() -> None:
    assert {"zoomnas", "classification"} <= set(list_tasks())
    assert DEFAULT_TASK == "zoomnas"
    assert load_experiment(ROOT / "experiments" / "quickstart.yaml").task == "zoomnas"


def test_an_unknown_task_is_one_config_error_naming_the_key_and_the_tasks(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    doc.update(task="segmentation", space=str(ROOT / "search_spaces" / "quickstart.yaml"),
               trainer=str(ROOT / "trainers" / "cpu_small.yaml"))
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert e.value.key == "task" and e.value.source == str(path)
    assert "'segmentation'" in str(e.value) and "classification" in str(e.value) and "zoomnas" in str(e.value)
    assert "\n" not in str(e.value)


def test_the_data_section_is_the_tasks_own(tmp_path: Path, classify_data: Path) -> None:
    path = write_classify_experiment(tmp_path, classify_data)
    exp = load_experiment(path)
    assert exp.task == "classification" and exp.data.root == classify_data
    doc = yaml.safe_load(path.read_text())
    doc["data"]["detections"] = "dets.json"  # a zoomnas key is not one of this task's
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert e.value.key == "data.detections" and "allowed: root, synthetic, digits, augment" in str(e.value)


def _trained_state(experiment_path: Path) -> dict[str, torch.Tensor]:
    exp = load_experiment(experiment_path)
    get_task(exp.task).ensure_data(exp)
    path = run_training(exp)
    assert path is not None
    return load_checkpoint(path)["model"]


def test_the_training_loop_trains_a_classification_supernet_and_a_resumed_run_ends_where_one_run_does(
        tmp_path: Path, classify_data: Path) -> None:
    whole = _trained_state(write_classify_experiment(tmp_path / "whole", classify_data))

    halves = tmp_path / "halves"
    write_classify_experiment(halves, classify_data)
    recipe = yaml.safe_load((halves / "trainer.yaml").read_text())
    (halves / "trainer.yaml").write_text(yaml.safe_dump({**recipe, "schedule": {**recipe["schedule"], "epochs": 1}}))
    _trained_state(halves / "experiment.yaml")
    (halves / "trainer.yaml").write_text(yaml.safe_dump(recipe))  # the same run, told to go on to epoch 2
    resumed = _trained_state(halves / "experiment.yaml")

    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    payload = load_checkpoint(tmp_path / "halves" / "out" / "checkpoints" / "latest.pt")
    assert (payload["task"], payload["model_name"], payload["epoch"]) == ("classification", "mobilenetv3", 2)


def test_a_checkpoint_of_another_task_is_not_resumed(tmp_path: Path, classify_data: Path) -> None:
    path = write_classify_experiment(tmp_path, classify_data)
    exp = load_experiment(path)
    get_task(exp.task).ensure_data(exp)
    trainer = SupernetTrainer(exp)
    trainer.checkpoint(False, {})
    latest = exp.checkpoint_dir / "latest.pt"
    payload = load_checkpoint(latest)
    torch.save({**payload, "task": "zoomnas"}, latest)
    with pytest.raises(TrainingError) as e:
        SupernetTrainer(exp).resume()
    assert e.value.key == "task" and "'zoomnas'" in str(e.value)


def test_the_epoch_evaluation_scores_max_and_min_by_the_tasks_metrics_and_leaves_the_net_as_it_was(
        tmp_path: Path, classify_data: Path) -> None:
    exp = load_experiment(write_classify_experiment(tmp_path, classify_data))
    task = get_task(exp.task)
    task.ensure_data(exp)
    net = task.build_supernet(exp)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    val = EpochEval(exp)({"event": "epoch", "epoch": 1, "net": net})
    assert val is not None
    assert set(val) == {f"val/{role}/{m}" for role in ("max", "min") for m in ("top1", "top5")}
    assert all(0.0 <= v <= 1.0 for v in val.values())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and net.training


@pytest.mark.parametrize("command", [["retrain"], ["validate"], ["subnet", "eval"], ["subnet", "export", "--out", "x"]])
def test_the_phases_after_training_stop_with_one_line_for_a_task_without_them(
        tmp_path: Path, classify_data: Path, command: list[str]) -> None:
    from typer.testing import CliRunner

    from nasplat.cli.main import app

    path = write_classify_experiment(tmp_path, classify_data)
    res = CliRunner().invoke(app, [*command, str(path)] if command[0] != "subnet" else [*command[:2], str(path), *command[2:]])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and str(path) in line and "task" in line and "'classification'" in line
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_checkpoint_schema_rebuilds_the_network_through_its_task_and_says_what_cannot_continue(
        tmp_path: Path, classify_data: Path) -> None:
    from nasplat.train.checkpoint import continuation_problem, supernet_from_payload

    exp = load_experiment(write_classify_experiment(tmp_path, classify_data))
    get_task(exp.task).ensure_data(exp)
    trainer = SupernetTrainer(exp)
    trainer.checkpoint(False, {})
    payload = load_checkpoint(exp.checkpoint_dir / "latest.pt")
    net = supernet_from_payload(payload)
    assert type(net) is type(trainer.net)
    assert all(torch.equal(v, trainer.net.state_dict()[k]) for k, v in net.state_dict().items())

    assert continuation_problem(payload, exp, 1) is None
    assert continuation_problem(payload, exp, 2)[1] == "cluster.num_workers"
    assert continuation_problem({**payload, "version": 1}, exp, 1)[1] is None
    with pytest.raises(TrainingError, match="unknown task"):
        supernet_from_payload({**payload, "task": "segmentation"})
    with pytest.raises(TrainingError, match="not a nasplat supernet checkpoint"):
        supernet_from_payload({k: v for k, v in payload.items() if k != "supernet_config"})
