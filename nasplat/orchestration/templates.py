"""Launch files for `nasplat run EXP.yaml --cluster` on a real cluster (`nasplat cluster template`).

A cluster's nodes share no disk, and three places must agree with each other before a run can
work there: the experiment file (`cluster.address: auto`, paths that exist on the nodes), the
cluster's size (enough worker slots for the largest phase: Ray Train's workers, the search's
evaluators, Tune's concurrent retrain trials) and the way the driver is started on the head node.
Writing those by hand is where a first cluster run goes wrong, so this module derives them from
one loaded `Experiment`:

- `kuberay`: `rayjob.yaml`, a KubeRay `RayJob` (its entrypoint `nasplat run ... --cluster`) and a
  ConfigMap holding the experiment, space and trainer files, mounted at the same path on the head
  and every worker (the driver reads them on the head; the workers get the experiment by value,
  the mount keeps `nasplat` commands run by hand in a worker pod working); plus a
  `README.md` with the kubectl commands.
- `ray-up`: `cluster.yaml` for the Ray cluster launcher, the experiment's files under
  `experiment/` (synced to every node by `file_mounts`, sent with the job by `--working-dir`) and
  `submit.sh` with the `ray job submit` line.
- `slurm`: `nasplat.sbatch`, which starts a Ray head and workers on the job's nodes, waits for
  them (a bounded number of tries) and runs the driver on the head; plus an experiment copy with
  `cluster.address: auto` when the experiment names another address.

Every file opens with a comment naming the storage root (redacted) and warning where the
experiment keeps state that a cluster loses or cannot share: a local `storage_path`, a SQLite
study on the driver. Rendering is pure (experiment in, {relative file name: text} out; no Ray);
`write_templates` writes the result atomically and never overwrites a different file. Object
store credentials are never written: a pod takes them from a Kubernetes Secret, a VM from its
instance profile, a Slurm job from its environment.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nasplat import __version__
from nasplat.config import Experiment
from nasplat.errors import ConfigError
from nasplat.files import atomic_write_text, read_yaml, shell_command
from nasplat.storage import CACHE_ENV
from nasplat.store.redact import redact_url

KINDS = ("kuberay", "ray-up", "slurm")
PLACEHOLDER_IMAGE = f"REPLACE-ME/nasplat:{__version__}"
SECRET_NAME = "nasplat-object-store"  # the Kubernetes Secret with the object store's credentials

# Where the files live on a KubeRay pod: the ConfigMap (read-only), and two writable volumes.
_K8S_EXPERIMENT = "/nasplat/experiment"
_K8S_OUTPUT = "/nasplat/output"
_K8S_DATA = "/nasplat/data"
# Where `ray up` puts them on every node (`~` is the node's, or its container's, home).
_RAY_UP_EXPERIMENT = "~/nasplat-experiment"
_DASHBOARD = "http://127.0.0.1:8265"
_RAY_PORT = 6379
_JOIN_TRIES, _JOIN_SLEEP_S = 60, 5  # slurm: how long the workers may take to join the head
# The sizes of two AWS instance families, as (vCPUs, size): the workers get the smallest that fits.
_AWS_SIZES = {"m5": ((2, "large"), (4, "xlarge"), (8, "2xlarge"), (16, "4xlarge"), (32, "8xlarge"),
                     (48, "12xlarge"), (64, "16xlarge"), (96, "24xlarge")),
              "g5": ((4, "xlarge"), (8, "2xlarge"), (16, "4xlarge"), (32, "8xlarge"), (64, "16xlarge"))}


# ------------------------------------------------------------------------------------------------
# What the cluster needs, from the experiment
# ------------------------------------------------------------------------------------------------


def check_kind(kind: str) -> str:
    """`kind` when it is one of KINDS. Raises ConfigError naming KIND and the allowed kinds."""
    if kind not in KINDS:
        raise ConfigError(f"unknown template kind {kind!r}; allowed: {', '.join(KINDS)}", key="KIND")
    return kind


def worker_count(experiment: Experiment) -> int:
    """Worker nodes (pods) for the largest phase: Ray Train's workers, the search's evaluator
    actors, Tune's concurrent retrain trials; each takes one worker's CPUs (and one GPU)."""
    retrain = experiment.retrain.concurrent_trials if experiment.retrain is not None else 0
    return max(experiment.cluster.num_workers, experiment.search.num_evaluators, retrain)


def worker_cpus(experiment: Experiment) -> int:
    """CPUs of one worker node: `cluster.cpus_per_worker`, or a retrain trial's when larger."""
    retrain = experiment.retrain.trial_cpus(experiment.cluster) if experiment.retrain is not None else 0
    return max(experiment.cluster.cpus_per_worker, retrain)


def image_for(experiment: Experiment, image: str | None) -> str | None:
    """The container image: `--image`, else `cluster.runtime_env.image_uri`, else None."""
    if image:
        return image
    uri = (experiment.cluster.runtime_env or {}).get("image_uri")
    return uri if isinstance(uri, str) and uri else None


def ray_version() -> str | None:
    """The installed Ray's version (read from its metadata; Ray is not imported), or None."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None


def _k8s_name(name: str) -> str:
    """`nasplat-<name>` as a Kubernetes object name (lowercase, digits and '-'; short enough for
    the names KubeRay derives from it)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return ("nasplat-" + slug)[:40].rstrip("-") if slug else "nasplat"


def _file_key(name: str) -> str:
    return re.sub(r"[^-._a-zA-Z0-9]", "-", name)


def _bundle(experiment: Experiment) -> dict[str, tuple[str, Path]]:
    """role -> (file name in a bundle folder, source file) for the experiment and the YAML files it
    names; one file named twice keeps one name, two files with one name get their role as prefix."""
    sources = {"experiment": experiment.path, "space": experiment.space_path, "trainer": experiment.trainer_path}
    if experiment.retrain_trainer_path is not None:
        sources["retrain.trainer"] = experiment.retrain_trainer_path
    by_path: dict[Path, str] = {}
    out: dict[str, tuple[str, Path]] = {}
    for role, path in sources.items():
        if path not in by_path:
            name = _file_key(path.name)
            by_path[path] = name if name not in by_path.values() else _file_key(f"{role}-{path.name}")
        out[role] = (by_path[path], path)
    return out


# ------------------------------------------------------------------------------------------------
# The experiment as the cluster reads it
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placement:
    """Where a kind puts the experiment's files and folders on the nodes (as written in the copy)."""

    files: Mapping[str, str]  # role (space, trainer, retrain.trainer) -> path
    output_dir: str
    data_root: str
    drop_image_uri: bool  # the nodes already run the image: Ray must not start another container


def _data_root(experiment: Experiment, on_nodes: str) -> str:
    """`data.root` as the copy names it: an object-store URI as it is (every node copies the set
    into its own cache), else `on_nodes`."""
    return experiment.data.source if experiment.data.source is not None else on_nodes


def _experiment_copy(experiment: Experiment, where: _Placement) -> tuple[dict[str, Any], list[str]]:
    """The experiment file as the cluster reads it, and what was changed (for its header):
    `cluster.address: auto`, the referenced files and folders at their places on the nodes,
    every other path absolute."""
    raw = read_yaml(experiment.path)
    changed = ["cluster.address: auto"]
    raw["space"], raw["trainer"] = where.files["space"], where.files["trainer"]
    changed.append("space, trainer: the copies beside this file" if "/" not in where.files["space"]
                   else "space, trainer: absolute paths")
    if experiment.retrain_trainer_path is not None:
        raw["retrain"] = {**raw["retrain"], "trainer": where.files["retrain.trainer"]}
    raw["output_dir"] = where.output_dir
    data = {**raw["data"], "root": where.data_root}
    if experiment.data.detections is not None:
        data["detections"] = str(experiment.data.detections)
    raw["data"] = data
    changed.append(f"output_dir: {where.output_dir}, data.root: {where.data_root}")
    if raw.get("storage_path") is not None and experiment.storage.local is not None:
        raw["storage_path"] = experiment.storage.uri
    if experiment.search.latency_lut:
        raw["search"] = {**raw["search"], "latency_lut": str(experiment.latency_lut)}
    cluster = {**(raw.get("cluster") or {}), "address": "auto"}
    env = cluster.get("runtime_env")
    if where.drop_image_uri and isinstance(env, dict) and "image_uri" in env:
        cluster["runtime_env"] = {k: v for k, v in env.items() if k != "image_uri"} or None
        changed.append("cluster.runtime_env.image_uri removed: the nodes run that image already")
    raw["cluster"] = cluster
    return raw, changed


def _copy_text(experiment: Experiment, raw: Mapping[str, Any], changed: Iterable[str]) -> str:
    return _comment([f"{experiment.name}: a copy of {experiment.path} for the cluster, written by "
                     f"`nasplat cluster template` (nasplat {__version__}).", "Changed:",
                     *(f"  {c}" for c in changed)]) + _yaml(raw)


# ------------------------------------------------------------------------------------------------
# Notes every template starts with
# ------------------------------------------------------------------------------------------------


def node_output_dir(kind: str, experiment: Experiment) -> str:
    """The output directory as the `kind` cluster's nodes see it (the experiment copy's)."""
    return {"kuberay": _K8S_OUTPUT, "ray-up": f"~/nasplat-output/{experiment.name}",
            "slurm": str(experiment.output_dir)}[check_kind(kind)]


def notes(experiment: Experiment, kind: str) -> list[str]:
    """The lines a `kind` template's header says about state: the storage root (redacted), where
    the study and MLflow live, and a line starting `WARNING: ` for each that a cluster cannot
    share or loses."""
    output_dir = node_output_dir(kind, experiment)
    lines: list[str] = []
    storage = experiment.storage
    if storage.is_remote:
        lines.append(f"storage: {storage.redacted()}")
    else:
        unset = storage.uri == str(experiment.output_dir)
        lines.append(f"storage: {output_dir} (output_dir)" if unset else f"storage: {storage.uri}")
        what = "storage_path is not set: the storage is the output directory, a folder" if unset else \
            "storage_path is a folder"
        lines.append(f"WARNING: {what}: unless every node mounts it at that path (NFS), the nodes do not see each "
                     "other's checkpoints, Ray Train's run or Tune's sweeps. Set storage_path to "
                     "s3://bucket/prefix or gs://bucket/prefix.")
    if experiment.search.storage is None:
        lost = " (lost when the cluster is deleted)" if kind == "kuberay" else ""
        lines.append(f"WARNING: search.storage is not set: the study is SQLite on the driver, "
                     f"{output_dir}/study.db{lost}. Fine for one driver; use PostgreSQL "
                     "(postgresql://user@host/db) for several drivers or to keep the study.")
    else:
        lines.append(f"study: {redact_url(experiment.search.storage)}")
    if experiment.tracking.uri is None:
        lines.append(f"tracking: MLflow in SQLite on the driver, {output_dir}/mlflow.db (tracking.uri is not set)")
    else:
        lines.append(f"tracking: {redact_url(experiment.tracking.uri)}")
    for key, url in (("search.storage", experiment.search.storage), ("tracking.uri", experiment.tracking.uri)):
        if url and redact_url(url) != url:
            lines.append(f"WARNING: {key} holds a password, copied here as the experiment writes it; "
                         "keep these files private.")
    return lines


# ------------------------------------------------------------------------------------------------
# kuberay
# ------------------------------------------------------------------------------------------------


_Credentials = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]  # env, volumes, mounts


def _k8s_env(experiment: Experiment) -> _Credentials:
    """(env, volumes, volume mounts) that give a pod the object store's credentials, read from the
    Secret SECRET_NAME; none for a folder."""
    scheme = experiment.storage.uri.split("://", 1)[0] if experiment.storage.is_remote else None
    if scheme == "gs":
        return ([{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/key.json"}],
                [{"name": "google-credentials", "secret": {"secretName": SECRET_NAME}}],
                [{"name": "google-credentials", "mountPath": "/var/secrets/google", "readOnly": True}])
    if scheme is None:
        return [], [], []

    def from_secret(key: str, optional: bool) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": SECRET_NAME, "key": key}
        if optional:
            ref["optional"] = True  # absent from the Secret: the variable is not set
        return {"name": key, "valueFrom": {"secretKeyRef": ref}}

    env = [from_secret("AWS_ACCESS_KEY_ID", False), from_secret("AWS_SECRET_ACCESS_KEY", False),
           from_secret("AWS_ENDPOINT_URL", True), from_secret("AWS_DEFAULT_REGION", True)]
    return env, [], []


def _pod(name: str, image: str, resources: dict[str, Any], config_map: str, credentials: _Credentials,
         ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A pod template: one container with the experiment (read-only), output, data and shared
    memory volumes mounted, and the credentials' env and volumes."""
    env, volumes, mounts = credentials
    container: dict[str, Any] = {"name": name, "image": image}
    if ports:
        container["ports"] = ports
    container |= {
        "resources": resources,
        # node-local copies (a data.root in an object store, the supernet) on the data volume; the
        # same path in every pod, as the driver resolves it when it loads the experiment
        "env": [*env, {"name": CACHE_ENV, "value": f"{_K8S_DATA}/cache"}],
        "volumeMounts": [{"name": "experiment", "mountPath": _K8S_EXPERIMENT, "readOnly": True},
                         {"name": "output", "mountPath": _K8S_OUTPUT},
                         {"name": "data", "mountPath": _K8S_DATA},
                         {"name": "dshm", "mountPath": "/dev/shm"}, *mounts],
    }
    return {"spec": {"containers": [container], "volumes": [
        {"name": "experiment", "configMap": {"name": config_map}},
        {"name": "output", "emptyDir": {}},
        {"name": "data", "emptyDir": {}},  # EDIT: a PersistentVolumeClaim with the real data set
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},  # DataLoader workers share tensors here
        *volumes,
    ]}}


def render_kuberay(experiment: Experiment, image: str | None = None) -> dict[str, str]:
    """`rayjob.yaml` (the RayJob, then the ConfigMap of the experiment's files) and `README.md`."""
    bundle = _bundle(experiment)
    where = _Placement(files={r: n for r, (n, _) in bundle.items()}, output_dir=_K8S_OUTPUT,
                       data_root=_data_root(experiment, _K8S_DATA), drop_image_uri=True)
    raw, changed = _experiment_copy(experiment, where)
    exp_name = bundle["experiment"][0]
    files = {name: source.read_text(encoding="utf-8")
             for role, (name, source) in bundle.items() if role != "experiment"}
    files[exp_name] = _copy_text(experiment, raw, changed)

    name = _k8s_name(experiment.name)
    config_map = f"{name}-experiment"
    chosen = image_for(experiment, image)
    pod_image = chosen or PLACEHOLDER_IMAGE
    credentials = _k8s_env(experiment)
    n, cpus = worker_count(experiment), worker_cpus(experiment)
    memory = f"{max(4, 4 * cpus)}Gi"
    worker_resources: dict[str, Any] = {"requests": {"cpu": str(cpus), "memory": memory},
                                        "limits": {"cpu": str(cpus), "memory": memory}}
    if experiment.cluster.use_gpu:
        worker_resources["limits"]["nvidia.com/gpu"] = 1
    head_resources = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
    labels = {"app.kubernetes.io/name": "nasplat", "nasplat/experiment": name}
    rayjob = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "entrypoint": shell_command("nasplat", "run", f"{_K8S_EXPERIMENT}/{exp_name}", "--cluster"),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": {
                "rayVersion": ray_version() or "REPLACE-ME",
                "headGroupSpec": {
                    # the head runs the driver and Ray's control plane; all work goes to the workers
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod("ray-head", pod_image, head_resources, config_map, credentials,
                                     ports=[{"containerPort": _RAY_PORT, "name": "gcs-server"},
                                            {"containerPort": 8265, "name": "dashboard"},
                                            {"containerPort": 10001, "name": "client"}]),
                },
                "workerGroupSpecs": [{
                    "groupName": "workers",
                    "replicas": n,
                    "minReplicas": n,
                    "maxReplicas": n,
                    "rayStartParams": {},
                    "template": _pod("ray-worker", pod_image, worker_resources, config_map, credentials),
                }],
            },
        },
    }
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": config_map, "labels": labels}, "data": files}

    lines = notes(experiment, "kuberay")
    edit = [f"workers: {n} pods of {cpus} CPU{'s' if cpus > 1 else ''}"
            + (" and 1 GPU" if experiment.cluster.use_gpu else "") + " (the largest phase: Ray Train workers, "
            "evaluators, retrain trials); memory requests are a guess, EDIT them.",
            (f"data.root: {experiment.data.source}, copied once into each pod's cache ($NASPLAT_CACHE_DIR); "
             "give the pods room for the data set." if experiment.data.source is not None else
             f"data.root: {_K8S_DATA}, an emptyDir on every pod"
             + (" where data.synthetic is generated" if experiment.data.synthetic else "")
             + "; EDIT the `data` volume to a PersistentVolumeClaim holding the data set.")]
    if chosen is None:
        edit.append(f"EDIT image: {PLACEHOLDER_IMAGE} is a placeholder: an image FROM rayproject/ray:"
                    f"{ray_version() or '<ray version>'} with nasplat installed (or pass --image).")
    if experiment.storage.is_remote:
        edit.append(f"credentials: from the Secret {SECRET_NAME} (see README.md); none are written here.")
    header = _comment([f"{experiment.name}: `{shell_command('nasplat', 'run', experiment.path.name, '--cluster')}` as a KubeRay RayJob "
                       f"(nasplat {__version__}). Apply with: kubectl apply -f rayjob.yaml", *lines, *edit])
    return {"rayjob.yaml": header + _yaml(rayjob) + "---\n" + _yaml(configmap),
            "README.md": _kuberay_readme(experiment, name, lines, edit)}


def _kuberay_readme(experiment: Experiment, name: str, lines: list[str], edit: list[str]) -> str:
    secret = ""
    if experiment.storage.is_remote and experiment.storage.uri.startswith("gs://"):
        secret = f"kubectl create secret generic {SECRET_NAME} --from-file=key.json=SERVICE-ACCOUNT.json\n"
    elif experiment.storage.is_remote:
        secret = (f"kubectl create secret generic {SECRET_NAME} \\\n"
                  "  --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... \\\n"
                  "  [--from-literal=AWS_ENDPOINT_URL=https://minio.example:9000] \\\n"
                  "  [--from-literal=AWS_DEFAULT_REGION=...]\n")
    bullet = "".join(f"- {line}\n" for line in [*lines, *edit])
    return (
        f"# {experiment.name} on KubeRay\n\n"
        f"Written by `{shell_command('nasplat', 'cluster', 'template', 'kuberay', experiment.path.name)}` (nasplat {__version__}).\n"
        f"`rayjob.yaml` holds a RayJob that runs `nasplat run ... --cluster` on a new Ray cluster and a\n"
        f"ConfigMap with the experiment's files, mounted at `{_K8S_EXPERIMENT}` on every pod.\n\n"
        f"{bullet}\n"
        "## Run\n\n"
        "```bash\n"
        "# once per Kubernetes cluster: the KubeRay operator\n"
        "helm repo add kuberay https://ray-project.github.io/kuberay-helm/\n"
        "helm install kuberay-operator kuberay/kuberay-operator\n"
        + (f"# the object store's credentials\n{secret}" if secret else "")
        + "kubectl apply -f rayjob.yaml\n"
        "```\n\n"
        "## Watch\n\n"
        "```bash\n"
        f"kubectl get rayjob {name} -w                    # JOB STATUS, DEPLOYMENT STATUS\n"
        f"kubectl logs -f job/{name}                      # the driver's output (nasplat run)\n"
        f"kubectl get pods -l ray.io/cluster -o wide\n"
        f"kubectl port-forward svc/$(kubectl get rayjob {name} -o jsonpath='{{.status.rayClusterName}}')-head-svc \\\n"
        "  8265   # the Ray dashboard on http://127.0.0.1:8265\n"
        "```\n\n"
        "The cluster is deleted when the job finishes (`shutdownAfterJobFinishes`); what is left is in the\n"
        "storage root. Remove the job and the ConfigMap with `kubectl delete -f rayjob.yaml`.\n"
    )


# ------------------------------------------------------------------------------------------------
# ray-up
# ------------------------------------------------------------------------------------------------


def _aws_instance(cpus: int, gpu: bool) -> str:
    family = "g5" if gpu else "m5"
    sizes = _AWS_SIZES[family]
    size = next((s for v, s in sizes if v >= cpus), sizes[-1][1])
    return f"{family}.{size}"


def render_ray_up(experiment: Experiment, out_dir: Path, image: str | None = None) -> dict[str, str]:
    """`cluster.yaml` for `ray up`, `submit.sh`, and the experiment's files under `experiment/`."""
    bundle = _bundle(experiment)
    raw_root = read_yaml(experiment.path)["data"]["root"]
    data_root = str(raw_root) if Path(str(raw_root)).expanduser().is_absolute() else f"~/nasplat-data/{experiment.name}"
    data_root = _data_root(experiment, data_root)
    chosen = image_for(experiment, image)
    output_dir = node_output_dir("ray-up", experiment)
    where = _Placement(files={r: n for r, (n, _) in bundle.items()}, output_dir=output_dir, data_root=data_root,
                       drop_image_uri=chosen is not None)
    raw, changed = _experiment_copy(experiment, where)
    exp_name = bundle["experiment"][0]
    files = {f"experiment/{name}": source.read_text(encoding="utf-8")
             for role, (name, source) in bundle.items() if role != "experiment"}
    files[f"experiment/{exp_name}"] = _copy_text(experiment, raw, changed)

    n, cpus, gpu = worker_count(experiment), worker_cpus(experiment), experiment.cluster.use_gpu
    worker_resources: dict[str, Any] = {"CPU": cpus} | ({"GPU": 1} if gpu else {})
    config: dict[str, Any] = {
        "cluster_name": _k8s_name(experiment.name),
        "max_workers": n,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
    }
    if chosen is not None:
        config["docker"] = {"image": chosen, "container_name": "ray_container", "pull_before_run": True,
                            "run_options": ["--ulimit nofile=65536:65536"]}
    config |= {
        "provider": {"type": "aws", "region": "us-west-2", "cache_stopped_nodes": False},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            # the head runs the driver and Ray's control plane; all work goes to the workers
            "head": {"resources": {"CPU": 0}, "node_config": {"InstanceType": "m5.xlarge"}},
            "worker": {"min_workers": n, "max_workers": n, "resources": worker_resources,
                       "node_config": {"InstanceType": _aws_instance(cpus, gpu)}},
        },
        "head_node_type": "head",
        "file_mounts": {_RAY_UP_EXPERIMENT: str(out_dir.resolve() / "experiment")},
    }
    if chosen is None:
        ray = ray_version()
        config["setup_commands"] = [f"pip install 'ray[default]{'==' + ray if ray else ''}' 'nasplat=={__version__}'"]

    lines = notes(experiment, "ray-up")
    edit = [f"workers: {n} x {_aws_instance(cpus, gpu)} ({cpus} CPU{'s' if cpus > 1 else ''}"
            + (", 1 GPU" if gpu else "") + " for Ray: the largest phase); EDIT provider.region, the instance "
            "types, and node_config.IamInstanceProfile for the bucket (no credentials are written here).",
            f"data.root: {data_root} on every node"
            + (" (data.synthetic is generated there)" if experiment.data.synthetic else "")]
    if chosen is None:
        edit.append(f"no image: setup_commands pip-install nasplat {__version__} on every node; EDIT to your "
                    "package index or a wheel, or pass --image for a docker image with nasplat.")
    header = _comment([f"{experiment.name}: a Ray cluster for `{shell_command('nasplat', 'run', experiment.path.name, '--cluster')}` "
                       f"(nasplat {__version__}). Start it from this folder: ray up -y cluster.yaml; then ./submit.sh",
                       *lines, *edit])
    files["cluster.yaml"] = header + _yaml(config)
    files["submit.sh"] = _submit_script(experiment, exp_name, lines)
    return files


def _submit_script(experiment: Experiment, exp_name: str, lines: list[str]) -> str:
    return (
        "#!/bin/bash\n"
        + _comment([f"{experiment.name}: submit `{shell_command('nasplat', 'run', exp_name, '--cluster')}` to the cluster of cluster.yaml "
                    f"(nasplat {__version__}).", *lines, "",
                    "1. start the nodes (from this folder):  ray up -y cluster.yaml",
                    "2. submit, and follow the driver's output:  ./submit.sh",
                    "   (the experiment/ folder goes with the job as its working dir; the head's dashboard is",
                    f"   forwarded to {_DASHBOARD} through ssh while this script runs)",
                    f"3. later:  ray job list --address {_DASHBOARD}  (with `ray dashboard cluster.yaml` running)",
                    "4. stop the nodes when it is done:  ray down -y cluster.yaml"])
        + "set -euo pipefail\n"
        'cd "$(dirname "$0")"\n\n'
        "ray dashboard cluster.yaml >/dev/null 2>&1 &\n"
        "tunnel=$!\n"
        "trap 'kill $tunnel 2>/dev/null || true' EXIT\n"
        "for ((try = 1; try <= 30; try++)); do  # the tunnel is up when the port answers\n"
        "    if (exec 3<>/dev/tcp/127.0.0.1/8265) 2>/dev/null; then break; fi\n"
        "    sleep 1\n"
        "done\n\n"
        f"ray job submit --address {_DASHBOARD} --working-dir experiment -- {shell_command('nasplat', 'run', exp_name, '--cluster')}\n"
    )


# ------------------------------------------------------------------------------------------------
# slurm
# ------------------------------------------------------------------------------------------------


def render_slurm(experiment: Experiment, out_dir: Path, image: str | None = None) -> dict[str, str]:
    """`nasplat.sbatch`, and `<experiment>.cluster.yaml` (address `auto`, absolute paths) when the
    experiment names another `cluster.address`."""
    files: dict[str, str] = {}
    exp_path = experiment.path
    if experiment.cluster.address != "auto":
        bundle = _bundle(experiment)
        where = _Placement(files={r: str(p) for r, (_, p) in bundle.items()},
                           output_dir=node_output_dir("slurm", experiment),
                           data_root=_data_root(experiment, str(experiment.data.root)),
                           drop_image_uri=False)
        raw, changed = _experiment_copy(experiment, where)
        copy = f"{experiment.path.stem}.cluster.yaml"
        files[copy] = _copy_text(experiment, raw, changed)
        exp_path = out_dir.resolve() / copy
    n, cpus, gpu = worker_count(experiment), worker_cpus(experiment), experiment.cluster.use_gpu
    lines = notes(experiment, "slurm")
    address = ("cluster.address is auto: the driver joins the Ray this job starts." if exp_path == experiment.path else
               f"cluster.address must be auto: this job runs {exp_path.name}, a copy with address auto.")
    image_note = [f"image {image}: not used; run nasplat from an environment (or wrap the ray and nasplat lines "
                  "in `apptainer exec`)."] if image else []
    header = _comment([f"{experiment.name}: `nasplat run --cluster` on a Ray cluster inside one Slurm job "
                       f"(nasplat {__version__}). Submit with: sbatch nasplat.sbatch",
                       *lines, address,
                       f"{n + 1} nodes: a Ray head (0 CPUs for tasks; it runs the driver) and {n} workers of "
                       f"{cpus} CPU{'s' if cpus > 1 else ''}" + (" and 1 GPU" if gpu else "") + " (the largest phase).",
                       f"data.root: {experiment.data.root} on every node"
                       + (" (data.synthetic is generated there)" if experiment.data.synthetic else "") + ".",
                       f"The experiment files are read at these paths on every node: {exp_path}, "
                       f"{experiment.space_path}, {experiment.trainer_path}; copy them there (same path) "
                       "when the nodes do not share that filesystem.",
                       *image_note, "EDIT: --time, a partition/account, and the environment below."])
    sbatch = [f"--job-name={_k8s_name(experiment.name)}", f"--nodes={n + 1}", "--ntasks-per-node=1",
              f"--cpus-per-task={cpus}", *(["--gpus-per-node=1"] if gpu else []), "--time=24:00:00",
              f"--output={_k8s_name(experiment.name)}-%j.out"]
    files["nasplat.sbatch"] = "#!/bin/bash\n" + header + "".join(f"#SBATCH {s}\n" for s in sbatch) + _SLURM_BODY.format(
        experiment=_shell_quote(str(exp_path)), port=_RAY_PORT, nodes=n + 1, tries=_JOIN_TRIES, sleep=_JOIN_SLEEP_S)
    return files


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


_SLURM_BODY = """
set -uo pipefail

# EDIT: an environment with nasplat and Ray installed, at the same path on every node, e.g.
# source "$HOME/venvs/nasplat/bin/activate"

experiment={experiment}
port={port}
nodes_expected={nodes}  # the head and the workers
join_tries={tries}      # x {sleep} s: how long the workers may take to join the head

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${{nodes[0]}}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{{print $1}}')

# Each `ray start --block` runs as one job step; stopping the step stops that node's Ray.
ray_pids=()
stop_ray() {{
    if ((${{#ray_pids[@]}} > 0)); then
        kill "${{ray_pids[@]}}" 2>/dev/null
        wait "${{ray_pids[@]}}" 2>/dev/null
    fi
}}
trap stop_ray EXIT
trap 'exit 143' TERM INT

srun --nodes=1 --ntasks=1 -w "$head" \\
    ray start --head --node-ip-address="$head_ip" --port="$port" --num-cpus=0 --num-gpus=0 --block &
ray_pids+=($!)
sleep 10
for worker in "${{nodes[@]:1}}"; do
    srun --nodes=1 --ntasks=1 -w "$worker" \\
        ray start --address "$head_ip:$port" --num-cpus="$SLURM_CPUS_PER_TASK" --block &
    ray_pids+=($!)
done

# `ray status` lists the nodes that joined under Active: and Idle:, as ` <count> node_<id>`
joined=0
for ((try = 1; try <= join_tries; try++)); do
    joined=$(ray status --address "$head_ip:$port" 2>/dev/null |
        awk '/^(Active|Idle):/ {{s = 1; next}} /^[A-Za-z]/ {{s = 0}} s && / node_/ {{n += $1}} END {{print n + 0}}')
    if ((joined >= nodes_expected)); then
        break
    fi
    sleep {sleep}
done
if ((joined < nodes_expected)); then
    echo "nasplat.sbatch: $joined of $nodes_expected Ray nodes joined after $((join_tries * {sleep})) s" >&2
    exit 1
fi

RAY_ADDRESS="$head_ip:$port" nasplat run "$experiment" --cluster
"""


# ------------------------------------------------------------------------------------------------
# Rendering and writing
# ------------------------------------------------------------------------------------------------


def render(kind: str, experiment: Experiment, out_dir: Path, image: str | None = None) -> dict[str, str]:
    """{file name relative to `out_dir`: text} of the `kind` templates for `experiment`.
    `out_dir` matters only where a file names another by absolute path (ray-up's file_mounts,
    slurm's experiment copy). Raises ConfigError for an unknown kind."""
    renderers: dict[str, Callable[[], dict[str, str]]] = {
        "kuberay": lambda: render_kuberay(experiment, image),
        "ray-up": lambda: render_ray_up(experiment, out_dir, image),
        "slurm": lambda: render_slurm(experiment, out_dir, image),
    }
    return renderers[check_kind(kind)]()


def write_templates(kind: str, experiment: Experiment, out_dir: str | Path, image: str | None = None) -> list[Path]:
    """Write the `kind` templates into `out_dir` (created), each file atomically; scripts are
    executable. Returns the files' paths. A file already there with the same text is left as it
    is. Raises ConfigError (naming `--out`) before writing anything when one is there with other
    text, or when a file's place is a folder; ConfigError for an unknown kind."""
    out = Path(out_dir)
    files = render(kind, experiment, out, image)
    pending: dict[Path, str] = {}
    for rel, text in files.items():
        path = out / rel
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; remove it or choose another folder", key="--out")
        if path.exists() and path.read_text(encoding="utf-8", errors="replace") != text:
            raise ConfigError(f"{path} exists and differs from the template; remove it or choose another folder",
                              key="--out")
        if not path.exists():
            pending[path] = text
    for path, text in pending.items():
        atomic_write_text(text, path)
        path.chmod(0o755 if path.suffix in (".sh", ".sbatch") else 0o644)
    return [out / rel for rel in files]


def next_step(kind: str, out_dir: str | Path) -> str:
    """The command to run after writing the `kind` templates into `out_dir`."""
    out = Path(out_dir)
    return {"kuberay": shell_command("kubectl", "apply", "-f", out / "rayjob.yaml"),
            "ray-up": f"{shell_command('ray', 'up', '-y', out / 'cluster.yaml')} && {shell_command(out / 'submit.sh')}",
            "slurm": shell_command("sbatch", out / "nasplat.sbatch")}[check_kind(kind)]


# ------------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------------


def _comment(lines: Iterable[str]) -> str:
    """`lines` as `#` comment lines (a line with newlines becomes several)."""
    out = []
    for line in lines:
        for part in line.splitlines() or [""]:
            out.append(f"# {part}\n" if part else "#\n")
    return "".join(out)


class _Dumper(yaml.SafeDumper):
    """`yaml.safe_dump` with multi-line strings as literal blocks (the embedded files stay
    readable) and lists indented under their key, as Kubernetes manifests are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a list used twice (the pods' env) is written out twice, not as &id001 / *id001


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


def _yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)


__all__ = [
    "KINDS",
    "PLACEHOLDER_IMAGE",
    "SECRET_NAME",
    "check_kind",
    "image_for",
    "next_step",
    "node_output_dir",
    "notes",
    "ray_version",
    "render",
    "render_kuberay",
    "render_ray_up",
    "render_slurm",
    "worker_count",
    "worker_cpus",
    "write_templates",
]
