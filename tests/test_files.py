"""`nasplat.files`: only a bounded regular file is read (a symlink loop, a folder, a FIFO or a
device is one error naming it, at once), written files get the mode `open()` would give them,
`check_writable` probes a destination, and `shell_command` quotes what it must."""

from __future__ import annotations

import os
import shlex
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasplat import files
from nasplat.errors import ConfigError, DataError


def _symlink_loop(folder: Path, name: str) -> Path:
    path, other = folder / name, folder / f"{name}.other"
    other.symlink_to(path.name)
    path.symlink_to(other.name)
    return path


def _read_in_thread(path: Path, **kw: object) -> BaseException | object:
    """What `read_yaml(path)` raised or returned, or a failure when it is still waiting after 10 s
    (a FIFO read by `open()`: then a writer is opened to set it free)."""
    out: list[object] = []

    def read() -> None:
        try:
            out.append(files.read_yaml(path, **kw))  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        with open(path, "w"):  # noqa: PTH123 - unblocks the reader's open()
            pass
        worker.join(10)
        pytest.fail(f"reading {path} waited for a writer")
    return out[0]


def test_a_symlink_loop_is_one_error_naming_the_file(tmp_path: Path) -> None:
    loop = _symlink_loop(tmp_path, "space.yaml")
    with pytest.raises(ConfigError, match="is a loop of symbolic links") as e:
        files.read_yaml(loop)
    assert e.value.source == str(loop) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="is a loop of symbolic links") as e:
        files.resolve_path(loop)
    assert e.value.source == str(loop)
    with pytest.raises(DataError, match="Too many levels of symbolic links"):
        files.read_json(loop, what="results", error=DataError)


def test_a_folder_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a YAML file"):
        files.read_yaml(tmp_path)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "experiment.yaml"
    os.mkfifo(fifo)
    result = _read_in_thread(fifo)
    assert isinstance(result, ConfigError) and "is a FIFO, not a YAML file" in str(result), result


@pytest.mark.timeout(30)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused_before_reading(device: str) -> None:
    with pytest.raises(ConfigError, match="is a character device, not a YAML file"):
        files.read_yaml(device)


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(files.MAX_TEXT_BYTES + 1)  # sparse: no disk, and nothing is read
    with pytest.raises(ConfigError, match=r"is 64\.0 MiB, over the 64\.0 MiB limit of a YAML file"):
        files.read_yaml(big)
    small = tmp_path / "small.yaml"
    small.write_text("a: 1\n")
    assert files.read_yaml(small) == {"a": 1}


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_mode_open_gives_a_new_file(tmp_path: Path, umask_022: None) -> None:
    with (tmp_path / "plain.txt").open("w") as f:
        f.write("x")
    assert _mode(tmp_path / "plain.txt") == 0o644
    files.atomic_write_json({"a": 1}, tmp_path / "results.json")
    files.atomic_write_text("# card", tmp_path / "MODEL_CARD.md")
    files.atomic_write(tmp_path / "model.pt", lambda f: f.write(b"\0"))
    for name in ("results.json", "MODEL_CARD.md", "model.pt"):
        assert _mode(tmp_path / name) == 0o644, name
    os.umask(0o077)
    files.atomic_write_bytes(b"x", tmp_path / "strict.bin")
    assert _mode(tmp_path / "strict.bin") == 0o600  # the umask still applies


def test_a_private_atomic_write_is_private_from_its_creation(tmp_path: Path, umask_022: None) -> None:
    modes: list[int] = []

    def write(f) -> None:  # noqa: ANN001
        modes.append(stat.S_IMODE(os.fstat(f.fileno()).st_mode))
        f.write(b"secret")

    files.atomic_write(tmp_path / "key", write, mode=files.PRIVATE)
    assert modes == [0o600] and _mode(tmp_path / "key") == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary file left


def test_check_writable_creates_the_folder_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "lut.json"
    assert files.check_writable(target) == target
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder") as e:
        files.check_writable(tmp_path / "file" / "lut.json", key="--out")
    assert e.value.key == "--out"
    with pytest.raises(ConfigError, match="is a folder"):
        files.check_writable(tmp_path)


@pytest.mark.parametrize("args", [
    ("nasplat", "ui", "my runs/exp.yaml"),
    ("nasplat", "run", "expériences/zoom nas.yaml", "--cluster"),
    ("kubectl", "apply", "-f", "it's here/rayjob.yaml"),
])
def test_shell_command_quotes_each_argument_that_needs_it(args: tuple[str, ...]) -> None:
    line = files.shell_command(*args)
    assert shlex.split(line) == list(args)
    assert files.shell_command("nasplat", "ui", Path("plain/exp.yaml")) == "nasplat ui plain/exp.yaml"


def _experiment_in(folder: Path) -> Path:
    root = Path(__file__).resolve().parents[1]
    folder.mkdir(parents=True)
    path = folder / "exp.yaml"
    path.write_text(f"name: t\nspace: {root / 'search_spaces' / 'cpu_small.yaml'}\n"
                    f"trainer: {root / 'trainers' / 'cpu_small.yaml'}\ndata: {{root: data}}\noutput_dir: out\n")
    return path


def test_the_mlflow_ui_hint_quotes_an_experiment_path_with_a_space(tmp_path: Path) -> None:
    from nasplat.config import load_experiment
    from nasplat.orchestration.tracking import ui_hint

    path = _experiment_in(tmp_path / "my runs")
    hint = ui_hint(load_experiment(path), path, "1")
    command = hint.split("`")[1]
    assert shlex.split(command) == ["nasplat", "ui", str(path)]


def test_the_cluster_template_next_steps_quote_an_out_folder_with_a_space(tmp_path: Path) -> None:
    from nasplat.orchestration.templates import next_step

    out = tmp_path / "déploiement k8s"
    assert shlex.split(next_step("kuberay", out)) == ["kubectl", "apply", "-f", str(out / "rayjob.yaml")]
    assert shlex.split(next_step("slurm", out)) == ["sbatch", str(out / "nasplat.sbatch")]
    assert shlex.split(next_step("ray-up", out)) == ["ray", "up", "-y", str(out / "cluster.yaml"), "&&",
                                                    str(out / "submit.sh")]


def test_the_missing_checkpoint_hint_quotes_the_experiment_path(tmp_path: Path) -> None:
    from nasplat.config import load_experiment
    from nasplat.errors import TrainingError
    from nasplat.subnet.evaluator import latest_checkpoint

    path = _experiment_in(tmp_path / "my runs")
    with pytest.raises(TrainingError) as e:
        latest_checkpoint(load_experiment(path))
    assert shlex.split(str(e.value).split("`")[1]) == ["nasplat", "train", str(path)]
