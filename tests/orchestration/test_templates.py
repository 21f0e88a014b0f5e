"""`nasplat cluster template`'s files: each kind renders files that parse, size the cluster for the
largest phase, point the driver at an experiment copy with `cluster.address: auto` whose files
exist where the nodes read them, never hold a credential, and never overwrite a user's edits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nasplat.config import load_experiment
from nasplat.errors import ConfigError
from nasplat.orchestration import templates
from tests.conftest import TINY_RECIPE, write_tiny_experiment

SECRET = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
LAUNCH_FILES = ("rayjob.yaml", "README.md", "cluster.yaml", "submit.sh", "nasplat.sbatch")


def _experiment(tmp_path: Path, *, storage: str | None = "s3://bucket/prefix", **sections: dict[str, Any]):
    """A tiny experiment with `storage_path` and the given sections merged in, loaded."""
    path = write_tiny_experiment(tmp_path / "exp", tmp_path / "data")
    raw = yaml.safe_load(path.read_text())
    if storage is not None:
        raw["storage_path"] = storage
    for key, value in sections.items():
        raw[key] = {**(raw.get(key) or {}), **value}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_experiment(path)


def _rayjob(files: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = list(yaml.safe_load_all(files["rayjob.yaml"]))
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ConfigMap", "RayJob"]
    return by_kind["RayJob"], by_kind["ConfigMap"]


@pytest.mark.parametrize("kind", templates.KINDS)
def test_each_kind_writes_files_that_parse_and_name_the_storage(tmp_path, kind):
    experiment = _experiment(tmp_path)
    out = tmp_path / "out"
    paths = templates.write_templates(kind, experiment, out)
    assert paths and all(p.is_file() and p.parent.is_relative_to(out) for p in paths)
    for path in paths:
        text = path.read_text()
        if path.suffix == ".yaml":
            assert all(doc is not None for doc in yaml.safe_load_all(text)), path
        if path.name in LAUNCH_FILES:  # not the experiment's copies
            assert "storage: s3://bucket/prefix" in text, path
            assert "WARNING: search.storage is not set" in text, path
        if path.suffix in (".sh", ".sbatch"):
            assert path.stat().st_mode & 0o111, path
            assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, path


def test_rayjob_runs_the_mounted_experiment_on_zero_cpu_head_and_sized_workers(tmp_path):
    experiment = _experiment(tmp_path, cluster={"num_workers": 3, "cpus_per_worker": 2},
                             search={"num_evaluators": 2}, retrain={"concurrent_trials": 4, "cpus_per_trial": 3})
    job, config_map = _rayjob(templates.render_kuberay(experiment))
    spec = job["spec"]
    assert job["apiVersion"] == "ray.io/v1"
    assert spec["entrypoint"] == "nasplat run /nasplat/experiment/experiment.yaml --cluster"
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "K8sJobMode"
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 4  # the 4 retrain trials
    (container,) = workers["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] == "3"  # a retrain trial's CPUs > cpus_per_worker
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    # the experiment's files are mounted at the same path on the head and on every worker
    for group in (head, workers):
        pod = group["template"]["spec"]
        assert {"name": "experiment", "configMap": {"name": config_map["metadata"]["name"]}} in pod["volumes"]
        assert any(m["mountPath"] == "/nasplat/experiment" for m in pod["containers"][0]["volumeMounts"])
    assert sorted(config_map["data"]) == ["experiment.yaml", "space.yaml", "trainer.yaml"]


def test_configmap_experiment_loads_with_address_auto(tmp_path):
    experiment = _experiment(tmp_path, cluster={"address": "ray://somewhere:10001"})
    _, config_map = _rayjob(templates.render_kuberay(experiment))
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for name, text in config_map["data"].items():
        (mounted / name).write_text(text)
    copy = load_experiment(mounted / "experiment.yaml")
    assert copy.cluster.address == "auto"
    assert copy.space_path == mounted / "space.yaml" and copy.trainer_path == mounted / "trainer.yaml"
    assert copy.output_dir == Path("/nasplat/output") and copy.data.root == Path("/nasplat/data")
    assert copy.storage.uri == "s3://bucket/prefix"
    assert (mounted / "space.yaml").read_text() == experiment.space_path.read_text()  # embedded as written


def test_a_retrain_recipe_with_the_trainers_file_name_is_bundled_under_its_own_name(tmp_path):
    other = tmp_path / "exp" / "recipes" / "trainer.yaml"
    other.parent.mkdir(parents=True)
    other.write_text(TINY_RECIPE.replace("epochs: 3", "epochs: 1"))
    experiment = _experiment(tmp_path, retrain={"trainer": "recipes/trainer.yaml"})
    _, config_map = _rayjob(templates.render_kuberay(experiment))
    assert sorted(config_map["data"]) == ["experiment.yaml", "retrain.trainer-trainer.yaml", "space.yaml", "trainer.yaml"]
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for name, text in config_map["data"].items():
        (mounted / name).write_text(text)
    copy = load_experiment(mounted / "experiment.yaml")
    assert copy.retrain_trainer_path == mounted / "retrain.trainer-trainer.yaml"
    assert copy.retrain_trainer == experiment.retrain_trainer and copy.trainer == experiment.trainer


def test_gpu_workers_get_a_gpu_limit(tmp_path):
    experiment = _experiment(tmp_path, cluster={"use_gpu": True})
    job, _ = _rayjob(templates.render_kuberay(experiment))
    (workers,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    sbatch = templates.render_slurm(experiment, tmp_path / "out")["nasplat.sbatch"]
    assert "#SBATCH --gpus-per-node=1\n" in sbatch
    cluster = yaml.safe_load(templates.render_ray_up(experiment, tmp_path / "out")["cluster.yaml"])
    assert cluster["available_node_types"]["worker"]["resources"] == {"CPU": 1, "GPU": 1}


def _images(job: dict[str, Any]) -> set[str]:
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return {c["image"] for p in pods for c in p["template"]["spec"]["containers"]}


def test_image_is_the_option_else_the_runtime_env_else_a_placeholder(tmp_path):
    plain = _experiment(tmp_path / "plain")
    job, _ = _rayjob(templates.render_kuberay(plain))
    assert _images(job) == {templates.PLACEHOLDER_IMAGE} and "REPLACE-ME" in templates.PLACEHOLDER_IMAGE
    assert _images(_rayjob(templates.render_kuberay(plain, "ghcr.io/me/nasplat:1"))[0]) == {"ghcr.io/me/nasplat:1"}

    env = {"image_uri": "ghcr.io/me/from-env:2", "env_vars": {"A": "1"}}
    with_env = _experiment(tmp_path / "env", cluster={"runtime_env": env})
    job, config_map = _rayjob(templates.render_kuberay(with_env))
    assert _images(job) == {"ghcr.io/me/from-env:2"}
    assert _images(_rayjob(templates.render_kuberay(with_env, "ghcr.io/me/option:3"))[0]) == {"ghcr.io/me/option:3"}
    # the pods run that image already: Ray must not start workers in another container
    copy = yaml.safe_load(config_map["data"]["experiment.yaml"])
    assert copy["cluster"]["runtime_env"] == {"env_vars": {"A": "1"}}

    cluster = yaml.safe_load(templates.render_ray_up(with_env, tmp_path / "out")["cluster.yaml"])
    assert cluster["docker"]["image"] == "ghcr.io/me/from-env:2" and "setup_commands" not in cluster
    cluster = yaml.safe_load(templates.render_ray_up(plain, tmp_path / "out")["cluster.yaml"])
    assert "docker" not in cluster and any("nasplat==" in c for c in cluster["setup_commands"])


def test_no_credential_from_the_environment_reaches_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    experiment = _experiment(tmp_path)
    for kind in templates.KINDS:
        for name, text in templates.render(kind, experiment, tmp_path / kind, image="img:1").items():
            assert SECRET not in text and KEY_ID not in text, (kind, name)
    job, _ = _rayjob(templates.render_kuberay(experiment))
    env = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs["AWS_ACCESS_KEY_ID"] == {"name": templates.SECRET_NAME, "key": "AWS_ACCESS_KEY_ID"}
    assert refs["AWS_SECRET_ACCESS_KEY"] == {"name": templates.SECRET_NAME, "key": "AWS_SECRET_ACCESS_KEY"}
    assert refs["AWS_ENDPOINT_URL"]["optional"] is True and refs["AWS_DEFAULT_REGION"]["optional"] is True
    # the only plain value: the node-local cache on the data volume, the same path in every pod
    assert [e for e in env if "value" in e] == [{"name": "NASPLAT_CACHE_DIR", "value": "/nasplat/data/cache"}]


def test_local_storage_and_a_study_server_are_said_in_the_header(tmp_path):
    local = _experiment(tmp_path / "local", storage=None)
    for kind in templates.KINDS:
        assert "WARNING: storage_path is not set: the storage is the output directory" in "\n".join(
            templates.notes(local, kind))
    nfs = _experiment(tmp_path / "nfs", storage=str(tmp_path / "nfs-mount"))
    assert f"storage: {tmp_path / 'nfs-mount'}" in templates.notes(nfs, "slurm")
    assert any(line.startswith("WARNING: storage_path is a folder: unless every node mounts it")
               for line in templates.notes(nfs, "slurm"))
    served = _experiment(tmp_path / "served", search={"storage": "postgresql://nas:hunter22@db:5432/studies"})
    lines = templates.notes(served, "kuberay")
    assert "study: postgresql://nas:***@db:5432/studies" in lines
    assert not any("search.storage is not set" in line for line in lines)
    assert any(line.startswith("WARNING: search.storage holds a password") for line in lines)
    job, _ = _rayjob(templates.render_kuberay(local))
    env = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["NASPLAT_CACHE_DIR"]  # no credentials for a folder


def test_slurm_starts_head_and_workers_and_runs_an_auto_copy(tmp_path):
    experiment = _experiment(tmp_path, cluster={"num_workers": 2, "cpus_per_worker": 4}, search={"num_evaluators": 3})
    out = tmp_path / "out"
    files = templates.render_slurm(experiment, out)
    sbatch = files["nasplat.sbatch"]
    for line in ("#SBATCH --nodes=4\n", "#SBATCH --ntasks-per-node=1\n", "#SBATCH --cpus-per-task=4\n"):
        assert line in sbatch
    assert "--gpus-per-node" not in sbatch
    assert "ray start --head" in sbatch and "--num-cpus=0" in sbatch and "trap stop_ray EXIT" in sbatch
    assert f"experiment='{out.resolve() / 'experiment.cluster.yaml'}'" in sbatch
    assert sbatch.rstrip().endswith('RAY_ADDRESS="$head_ip:$port" nasplat run "$experiment" --cluster')
    out.mkdir()
    (out / "experiment.cluster.yaml").write_text(files["experiment.cluster.yaml"])
    copy = load_experiment(out / "experiment.cluster.yaml")
    assert copy.cluster.address == "auto"
    assert (copy.space_path, copy.trainer_path, copy.output_dir) == (
        experiment.space_path, experiment.trainer_path, experiment.output_dir)

    auto = _experiment(tmp_path / "auto", cluster={"address": "auto"})
    files = templates.render_slurm(auto, tmp_path / "out2")
    assert list(files) == ["nasplat.sbatch"] and f"experiment='{auto.path}'" in files["nasplat.sbatch"]


def test_slurm_waits_a_bounded_time_for_the_workers(tmp_path):
    """The join loop counts the nodes `ray status` lists and gives up after its tries."""
    sbatch = templates.render_slurm(_experiment(tmp_path), tmp_path / "out")["nasplat.sbatch"]
    awk = "/^(Active" + sbatch.split("awk '/^(Active", 1)[1].split("'", 1)[0]
    status = ("Node status\n-----\nActive:\n 1 node_a1\nIdle:\n 1 node_b2\n 1 node_c3\nPending:\n"
              " (no pending nodes)\nRecent failures:\n (no failures)\n")
    res = subprocess.run(["awk", awk], input=status, capture_output=True, text=True)
    assert res.stdout.strip() == "3"
    assert "for ((try = 1; try <= join_tries; try++))" in sbatch and "exit 1" in sbatch


def test_ray_up_cluster_mounts_the_experiment_and_submit_runs_it(tmp_path):
    experiment = _experiment(tmp_path, cluster={"num_workers": 2, "cpus_per_worker": 4})
    out = tmp_path / "out"
    paths = templates.write_templates("ray-up", experiment, out)
    cluster = yaml.safe_load((out / "cluster.yaml").read_text())
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    assert types["worker"]["min_workers"] == types["worker"]["max_workers"] == cluster["max_workers"] == 2
    assert types["worker"]["resources"] == {"CPU": 4} and "region" in cluster["provider"]
    assert cluster["file_mounts"] == {"~/nasplat-experiment": str(out.resolve() / "experiment")}
    submit = (out / "submit.sh").read_text()
    assert ("ray job submit --address http://127.0.0.1:8265 --working-dir experiment -- "
            "nasplat run experiment.yaml --cluster") in submit
    assert "ray up -y cluster.yaml" in submit and "ray down -y cluster.yaml" in submit
    assert {p.relative_to(out).as_posix() for p in paths} >= {"experiment/experiment.yaml", "experiment/space.yaml",
                                                            "experiment/trainer.yaml"}
    copy = load_experiment(out / "experiment" / "experiment.yaml")
    assert copy.cluster.address == "auto" and copy.space_path == out / "experiment" / "space.yaml"


def test_an_edited_file_is_never_overwritten(tmp_path):
    experiment = _experiment(tmp_path)
    out = tmp_path / "out"
    first = templates.write_templates("kuberay", experiment, out)
    assert templates.write_templates("kuberay", experiment, out) == first  # identical: fine
    (out / "README.md").write_text("my notes\n")
    shutil.copy(out / "rayjob.yaml", tmp_path / "before.yaml")
    other = _experiment(tmp_path / "other", cluster={"use_gpu": True})
    with pytest.raises(ConfigError, match="--out") as e:
        templates.write_templates("kuberay", other, out)
    assert "rayjob.yaml" in str(e.value) or "README.md" in str(e.value)
    assert (out / "README.md").read_text() == "my notes\n"
    assert (out / "rayjob.yaml").read_text() == (tmp_path / "before.yaml").read_text()  # nothing written


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="allowed: kuberay, ray-up, slurm"):
        templates.write_templates("nomad", _experiment(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_templates_do_not_import_ray():
    import sys

    code = "import sys, nasplat.orchestration.templates; print('ray' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
