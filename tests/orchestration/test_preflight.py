from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

import nasplat
from nasplat.config import DataConfig, Experiment, load_experiment
from nasplat.errors import ConfigError, StorageError
from nasplat.orchestration.preflight import (
    NodeCheck,
    _failed_task,
    check_node,
    cluster_preflight,
    preflight_cluster,
    render_table,
    require_ok,
)
from nasplat.storage import Storage
from tests.conftest import write_tiny_experiment

NOPE = "/proc/nasplat-nope"  # cannot be created, not even by root


@pytest.fixture
def experiment(tmp_path: Path, tiny_data: Path) -> Experiment:
    return load_experiment(write_tiny_experiment(tmp_path / "e", tiny_data))


def _without_data(experiment: Experiment, root: Path, *, synthetic: bool = False) -> Experiment:
    data = DataConfig(root=root, synthetic=experiment.data.synthetic if synthetic else None)
    return dataclasses.replace(experiment, data=data)


def _render(checks: list[NodeCheck]) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_table(checks))
    return console.export_text()


# --- check_node on this process, no Ray ------------------------------------------------------------


def test_check_node_passes_a_good_experiment_and_reports_each_problem_as_one_line(experiment: Experiment,
                                                                                   tmp_path: Path) -> None:
    good = check_node(experiment, nasplat.__version__)
    assert good["nasplat_version"] == nasplat.__version__
    assert (good["install"], good["storage"], good["data"], good["gpu"]) == ("ok", "ok", "ok", "-")

    bad = dataclasses.replace(_without_data(experiment, tmp_path / "none"), storage_root=Storage(NOPE))
    answer = check_node(bad, "9.9.9")
    assert answer["install"] == f"nasplat {nasplat.__version__} here, 9.9.9 on the driver"
    assert answer["storage"].startswith(f"cannot create the folder {NOPE}")
    assert answer["data"] == f"no annotations under {tmp_path / 'none'} and no data.synthetic"
    assert all("\n" not in v for v in answer.values())


def test_synthetic_data_needs_a_writable_place_and_gpus_are_checked_only_where_ray_has_some(
        experiment: Experiment, tmp_path: Path) -> None:
    assert check_node(_without_data(experiment, tmp_path / "a" / "b", synthetic=True), "")["data"] == "ok"
    (tmp_path / "file").write_text("")  # a file where the data root's parent folder should be
    unwritable = check_node(_without_data(experiment, tmp_path / "file" / "data", synthetic=True), "")["data"]
    assert unwritable == (f"no annotations under {tmp_path / 'file' / 'data'} and {tmp_path / 'file'} is not "
                          "writable to generate data.synthetic")

    use_gpu = dataclasses.replace(experiment, cluster=dataclasses.replace(experiment.cluster, use_gpu=True))
    assert check_node(use_gpu, "", gpus=0)["gpu"] == "-"  # Ray schedules no GPU work there
    import torch

    want = "ok" if torch.cuda.device_count() else "Ray advertises 1 GPU(s) but torch"
    assert check_node(use_gpu, "", gpus=1)["gpu"].startswith(want)


def test_require_ok_names_the_first_failing_node_and_the_key(experiment: Experiment) -> None:
    def node(i: int, **kw: object) -> NodeCheck:
        fields = dict(node_id=f"{i:02d}" + "ab" * 27, address=f"10.0.0.{i}", cpus=4.0, gpus=0.0,
                      nasplat_version="0.1.0", install="ok", storage="ok", data="ok", gpu="-")
        return NodeCheck(**{**fields, **kw})  # type: ignore[arg-type]

    require_ok(experiment, [node(1), node(2)])
    with pytest.raises(ConfigError) as e:
        require_ok(experiment, [node(1), node(2, data="no annotations under /d and no data.synthetic"),
                                node(3, install="nasplat not importable: No module named 'nasplat'")])
    assert str(e.value) == (f"{experiment.path}: data.root: node 10.0.0.2 (02ababab): no annotations under /d and "
                            "no data.synthetic; 1 more node(s) fail too")
    with pytest.raises(ConfigError, match="cluster.runtime_env: node 10.0.0.3 "):
        require_ok(experiment, [node(3, install="no answer in 60 s: is nasplat installed there?", storage="?")])
    use_gpu = dataclasses.replace(experiment, cluster=dataclasses.replace(experiment.cluster, use_gpu=True))
    with pytest.raises(ConfigError, match="cluster.use_gpu: no alive node of the cluster advertises a GPU"):
        require_ok(use_gpu, [node(1)])
    with pytest.raises(ConfigError, match="cluster.use_gpu: node 10.0.0.1 .*sees no CUDA device"):
        require_ok(use_gpu, [node(1, gpus=1.0, gpu="Ray advertises 1 GPU(s) but torch 2 sees no CUDA device")])


def test_a_task_that_cannot_import_nasplat_is_reported_as_such() -> None:
    """The texts Ray 2.60 gives: the function, or an argument, cannot be unpickled there."""
    function = RuntimeError("\x1b[36mray::check_node()\x1b[39m (pid=1, ip=10.0.0.2)\nRuntimeError: The "
                            "remote function failed to import on the worker.\n\n"
                            "ModuleNotFoundError: No module named 'nasplat'")
    assert _failed_task(function) == "nasplat not importable: ModuleNotFoundError: No module named 'nasplat'"
    argument = RuntimeError("ray::check_node() (pid=1, ip=10.0.0.2)\nray.exceptions.RaySystemError: System error: "
                            "No module named 'nasplat'\ntraceback: ...\nModuleNotFoundError: No module named 'nasplat'")
    assert _failed_task(argument) == "nasplat not importable: ModuleNotFoundError: No module named 'nasplat'"
    failed = ValueError("ray::check_node() (pid=1)\nValueError: boom")
    assert _failed_task(failed) == "the check failed there: ValueError: boom"
    from ray.exceptions import WorkerCrashedError  # the job's setup hook (nasplat's) failed to import

    assert _failed_task(WorkerCrashedError()).startswith("a Ray worker died at start: is nasplat installed there?")


def test_without_cluster_the_cli_preflight_does_nothing(experiment: Experiment) -> None:
    console = Console(record=True, file=io.StringIO())
    assert cluster_preflight(experiment, console) is None
    assert console.export_text() == ""


# --- on a local Ray ------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_every_node_is_checked_and_each_problem_names_the_node_and_key(  # noqa: ANN001
        ray_local, experiment: Experiment, tmp_path: Path, monkeypatch) -> None:
    import ray

    checks = preflight_cluster(experiment, timeout_s=60)
    assert len(checks) == 1 and checks[0].ok
    node = checks[0]
    assert node.node_id == ray.get_runtime_context().get_node_id() and node.cpus == 2
    name = f"{node.address} ({node.node_id[:8]})"
    node_re = re.escape(f"node {name}: ")
    table = _render(checks)
    assert all(h in table for h in ("node", "CPUs", "GPUs", "nasplat", "storage", "data", "GPU check"))
    assert name in table and nasplat.__version__ in table

    with pytest.raises(StorageError, match=f"storage_path: {node_re}cannot create the folder {NOPE}"):
        preflight_cluster(dataclasses.replace(experiment, storage_root=Storage(NOPE)))
    with pytest.raises(ConfigError, match=f"data.root: {node_re}no annotations under .* and no data.synthetic"):
        preflight_cluster(_without_data(experiment, tmp_path / "missing"))

    monkeypatch.setattr(nasplat, "__version__", "0.0.0-driver")  # the workers keep the installed one
    with pytest.raises(ConfigError) as e:
        preflight_cluster(experiment)
    assert e.value.source == str(experiment.path) and e.value.key == "cluster.runtime_env"
    assert e.value.detail == f"node {name}: nasplat {node.nasplat_version} here, 0.0.0-driver on the driver"

    console = Console(width=200, record=True, file=io.StringIO())
    joined = dataclasses.replace(experiment, cluster=dataclasses.replace(experiment.cluster, address="auto"))
    with pytest.raises(ConfigError, match="cluster.runtime_env"):
        cluster_preflight(joined, console)  # the table is printed before the error
    assert "0.0.0-driver on the driver" in console.export_text()
