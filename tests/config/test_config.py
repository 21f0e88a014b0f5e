import dataclasses
from pathlib import Path

import pytest

from nasplat.errors import ConfigError
from nasplat.config import PredictorConfig, SearchConfig, load_experiment, load_trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "trainers").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_trainer_recipe_loads(path):
    recipe = load_trainer(path)
    assert recipe.name == path.stem
    assert recipe.sandwich.num_random >= 0


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_loads_with_absolute_paths(path):
    exp = load_experiment(path)
    assert exp.name == path.stem
    assert exp.output_dir.is_absolute() and exp.data.root.is_absolute()
    assert exp.space_path.is_file() and exp.trainer_path.is_file()
    exp.space.validate(exp.space.max_arch())


def test_paper_recipe_is_the_papers():
    recipe = load_trainer(ROOT / "trainers" / "supernet.yaml")
    assert (recipe.optimizer.name, recipe.optimizer.lr) == ("adam", 1e-3)
    assert (recipe.schedule.epochs, recipe.schedule.milestones, recipe.schedule.gamma) == (210, (170, 200), 0.1)
    assert recipe.batch_size == 16 and recipe.heatmap_sigma == 3
    assert (recipe.augmentation.scale, recipe.augmentation.rotation, recipe.augmentation.flip) == (0.5, 40, True)
    assert recipe.sandwich.num_random == 2 and recipe.distillation.enabled
    assert recipe.bn_recalibration.images == 2000


def _write_experiment(tmp_path: Path, **overrides: str) -> Path:
    fields = {
        "name": "t",
        "space": str(ROOT / "search_spaces" / "cpu_small.yaml"),
        "trainer": str(ROOT / "trainers" / "cpu_small.yaml"),
        "data": "{root: data, synthetic: {train: 4, val: 2, seed: 0}}",
        "output_dir": "out",
    }
    fields.update(overrides)
    path = tmp_path / "exp.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    return path


def test_relative_paths_resolve_against_the_experiment_file(tmp_path):
    exp = load_experiment(_write_experiment(tmp_path))
    assert exp.output_dir == tmp_path / "out"
    assert exp.data.root == tmp_path / "data"
    assert exp.storage_url == f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    assert exp.tracking_uri == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"


def test_a_missing_trainer_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_experiment(_write_experiment(tmp_path, trainer="nope.yaml"))
    msg = str(info.value)
    assert "exp.yaml" in msg and "trainer" in msg and "nope.yaml" in msg


def test_a_bad_value_names_file_key_value_and_allowed(tmp_path):
    path = _write_experiment(tmp_path, search="{sampler: grid}")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    msg = str(info.value)
    assert str(path) in msg and "search.sampler" in msg and "'grid'" in msg and "nsga2" in msg


def test_an_unknown_key_lists_the_allowed_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nsandwich: {num_randoms: 3}\n")
    with pytest.raises(ConfigError) as info:
        load_trainer(path)
    assert "sandwich.num_randoms" in str(info.value) and "num_random" in str(info.value)


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="r.yaml"):
        load_trainer(path)


@pytest.mark.parametrize("search, key", [
    ('{n_trials: "10"}', "search.n_trials"),
    ('{budget_gflops: "0.1"}', "search.budget_gflops"),
    ("{n_trials: 10.0}", "search.n_trials"),
    ("{n_trials: true}", "search.n_trials"),
])
def test_values_of_the_wrong_type_are_not_coerced(tmp_path, search, key):
    with pytest.raises(ConfigError) as e:
        load_experiment(_write_experiment(tmp_path, search=search))
    assert e.value.key == key


def test_ints_are_floats_and_strings_are_paths(tmp_path):
    exp = load_experiment(_write_experiment(tmp_path, search="{budget_gflops: 1, n_trials: 3}"))
    assert exp.search.budget_gflops == 1.0 and exp.search.n_trials == 3
    assert isinstance(exp.data.root, Path)


def test_retrain_section_defaults_and_absence(tmp_path):
    assert load_experiment(_write_experiment(tmp_path)).retrain is None
    assert load_experiment(_write_experiment(tmp_path, retrain="null")).retrain is None
    exp = load_experiment(_write_experiment(tmp_path, retrain="{}"))
    assert (exp.retrain.top_k, exp.retrain.init, exp.retrain.lr) == (1, "inherited", None)
    (tmp_path / "ft.yaml").write_text("name: ft\noptimizer: {lr: 1.0e-4}\n")
    exp = load_experiment(_write_experiment(tmp_path, retrain="{top_k: 2, epochs: 3, lr: [1.0e-3, 4.0e-4], trainer: ft.yaml}"))
    assert exp.retrain.lr == (1e-3, 4e-4) and exp.retrain_trainer.optimizer.lr == 1e-4
    # a trial's CPUs: the cluster's per-worker count unless the section says otherwise
    assert exp.retrain.trial_cpus(exp.cluster) == exp.cluster.cpus_per_worker
    exp = load_experiment(_write_experiment(tmp_path, retrain="{cpus_per_trial: 3}"))
    assert exp.retrain.trial_cpus(exp.cluster) == 3


def test_retrain_top_k_beyond_the_searched_subnets_is_refused(tmp_path):
    path = _write_experiment(tmp_path, search="{n_trials: 3}", retrain="{top_k: 5}")
    with pytest.raises(ConfigError, match=r"retrain\.top_k: value 5 not allowed: .*n_trials = 3"):
        load_experiment(path)
    assert load_experiment(_write_experiment(tmp_path, search="{n_trials: 3}", retrain="{top_k: 3}")).retrain.top_k == 3


@pytest.mark.parametrize("retrain, key", [
    ("{top_k: 0}", "retrain.top_k"),
    ("{epochs: '3'}", "retrain.epochs"),
    ("{init: warm}", "retrain.init"),
    ("{lr: []}", "retrain.lr"),
    ("{lr: [0.001, -1]}", "retrain.lr.1"),
    ("{milestones: [3, 1]}", "retrain.milestones"),
    ("{milestones: [-1, 2]}", "retrain.milestones"),
    ("{milestones: [2, 2]}", "retrain.milestones"),
    ("{lr: [.inf]}", "retrain.lr.0"),
    ("{lr: [.nan]}", "retrain.lr.0"),
    ("{lr: [1.0e+30]}", "retrain.lr.0"),
    ("{lr: [0.001, 0.001]}", "retrain.lr"),
    ("{epochs: 1.0e+23}", "retrain.epochs"),
    ("{epochs: 100000000}", "retrain.epochs"),
    ("{cpus_per_trial: 0}", "retrain.cpus_per_trial"),
    ("{trainer: nope.yaml}", "retrain.trainer"),
    ("{epoch: 3}", "retrain.epoch"),
])
def test_a_bad_retrain_value_names_its_key(tmp_path, retrain, key):
    with pytest.raises(ConfigError) as e:
        load_experiment(_write_experiment(tmp_path, retrain=retrain))
    assert e.value.key == key and "exp.yaml" in str(e.value)


def test_retrain_cli_rejects_a_bad_section_in_one_line_before_writing(tmp_path):
    from typer.testing import CliRunner

    from nasplat.cli.main import app

    res = CliRunner().invoke(app, ["retrain", str(_write_experiment(tmp_path, retrain="{init: warm}"))])
    assert res.exit_code == 2 and "retrain.init" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(app, ["retrain", str(_write_experiment(tmp_path))])
    assert res.exit_code == 2 and "retrain" in res.output
    assert not (tmp_path / "out").exists()


def _alias_bomb(levels: int = 9, fold: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * fold)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fold)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
def test_a_yaml_alias_bomb_and_a_recursive_alias_are_one_line_before_anything_is_expanded(tmp_path):
    """Nine levels of nine-fold aliases (387 million values once expanded) and `a: &a [*a]`: each
    one ConfigError naming the file, from the CLI one line and exit 2; ordinary aliases still load."""
    from typer.testing import CliRunner

    from nasplat.cli.main import app
    from nasplat.files import read_yaml

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    with pytest.raises(ConfigError, match="expand to more than 100,000 values"):
        read_yaml(bomb)
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("name: x\na: &a [*a]\n")
    with pytest.raises(ConfigError, match="refers to its own anchor at line 2"):
        read_yaml(recursive)
    for path in (bomb, recursive):
        res = CliRunner().invoke(app, ["run", str(path)])
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert res.output.startswith(f"nasplat: error: {path}: ")
    shared = tmp_path / "shared.yaml"
    shared.write_text("base: &b {x: 1, y: [1, 2]}\nother: *b\n")
    assert read_yaml(shared) == {"base": {"x": 1, "y": [1, 2]}, "other": {"x": 1, "y": [1, 2]}}


def test_a_retrain_trial_wider_than_this_machine_is_refused_before_anything_is_written(tmp_path):
    """`retrain.cpus_per_trial: 64` on a 2-core machine started a local Ray of 64 CPUs."""
    import os

    from typer.testing import CliRunner

    from nasplat.cli.main import app

    path = _write_experiment(tmp_path, retrain=f"{{cpus_per_trial: {(os.cpu_count() or 1) + 1}}}")
    res = CliRunner().invoke(app, ["retrain", str(path)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "retrain.cpus_per_trial" in res.output and "this machine has" in res.output
    assert not (tmp_path / "out").exists()


def test_ui_port_and_predict_threads_are_bounded():
    from typer.testing import CliRunner

    from nasplat.cli.main import app

    res = CliRunner().invoke(app, ["ui", "exp.yaml", "--port", "70000"])
    assert res.exit_code == 2 and "'--port'" in res.output and "65535" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["predict", "m", "i", "--out", "o", "--threads", "100000"])
    assert res.exit_code == 2 and "'--threads'" in res.output and "Traceback" not in res.output


def _symlink_loop(folder: Path, name: str) -> Path:
    """`name` -> `name.other` -> `name`: opening either is ELOOP ("Too many levels of symbolic links")."""
    path, other = folder / name, folder / f"{name}.other"
    other.symlink_to(path.name)
    path.symlink_to(other.name)
    return path


@pytest.mark.timeout(60)
def test_an_experiment_file_that_is_a_symlink_loop_a_folder_or_a_device_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from nasplat.cli.main import app

    loop = _symlink_loop(tmp_path, "loop.yaml")
    with pytest.raises(ConfigError, match="loop of symbolic links") as info:
        load_experiment(loop)
    assert str(loop) in str(info.value)
    with pytest.raises(ConfigError, match="loop of symbolic links"):
        load_trainer(loop)
    (tmp_path / "folder.yaml").mkdir()
    for path, problem in ((loop, "loop of symbolic links"), (tmp_path / "folder.yaml", "is a directory"),
                          (Path("/dev/zero"), "is a character device")):
        res = CliRunner().invoke(app, ["run", str(path)])
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert res.output.startswith("nasplat: error: ") and str(path) in res.output and problem in res.output, res.output


@pytest.mark.parametrize("key", ["space", "trainer"])
def test_a_referenced_file_that_is_a_symlink_loop_names_the_experiment_and_key(tmp_path, key):
    _symlink_loop(tmp_path, "loop.yaml")
    with pytest.raises(ConfigError, match="loop of symbolic links") as info:
        load_experiment(_write_experiment(tmp_path, **{key: "loop.yaml"}))
    assert info.value.source == str(tmp_path / "exp.yaml") and info.value.key == key
    with pytest.raises(ConfigError, match="loop of symbolic links") as info:
        load_experiment(_write_experiment(tmp_path, **{key: str(tmp_path / "loop.yaml")}))  # absolute: not resolved
    assert info.value.key == key


_ZOOMNAS = str(ROOT / "search_spaces" / "zoomnas.yaml")


@pytest.mark.parametrize("fix, key, allowed", [
    ("{body.nope: 1}", "search.fix.body.nope", "allowed: body.resolution, body.stem.channels"),
    ("{body.resolution: 100}", "search.fix.body.resolution", "allowed: {256, 288, 320, 352, 384}"),
    ("{body.resolution: big}", "search.fix.body.resolution", "valid integer"),
    ("{body.branch1.channels: 24, body.branch1.groups: 4}", "search.fix.body.branch1.groups",
     "conflicts with the pin body.branch1.channels = 24; allowed for it: {3, 6, 12, 24}"),
])
def test_a_bad_search_fix_names_the_file_the_flat_key_and_the_allowed_values(tmp_path, fix, key, allowed):
    path = _write_experiment(tmp_path, space=_ZOOMNAS, search=f"{{fix: {fix}}}")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {key}: ") and allowed in msg, msg


def test_a_valid_search_fix_loads_as_the_search_space(tmp_path):
    path = _write_experiment(tmp_path, space=_ZOOMNAS,
                             search="{fix: {body.resolution: 256, body.branch1.groups: 4, face.roi_expansion: 1.2}}")
    exp = load_experiment(path)
    assert exp.space.fingerprint() != exp.search_space.fingerprint()
    flat = exp.search_space.max_arch().to_flat()
    assert (flat["body.resolution"], flat["body.branch1.groups"], flat["face.roi_expansion"]) == (256, 4, 1.2)
    exp.space.validate(exp.search_space.max_arch())
    plain = load_experiment(_write_experiment(tmp_path, space=_ZOOMNAS))
    assert plain.search_space is plain.space


@pytest.mark.parametrize("budget, total, parts", [
    ("0.1", 0.1, None),
    ("{body: 0.06, hand: 0.01}", None, {"body": 0.06, "hand": 0.01}),  # no total: only the parts are limited
    ("{body: 0.06, face: 0.02, total: 0.09}", 0.09, {"body": 0.06, "face": 0.02}),
    ("{body: 0.06, face: 0.02, hand: 0.01}", 0.06 + 0.02 + 2 * 0.01, {"body": 0.06, "face": 0.02, "hand": 0.01}),
    ("{hand: 0.01, total: 0.005}", 0.005, {"hand": 0.01}),  # a total below a part is allowed
    ("null", None, None),
])
def test_budget_gflops_is_a_number_or_limits_per_part(tmp_path, budget, total, parts):
    search = load_experiment(_write_experiment(tmp_path, search=f"{{budget_gflops: {budget}}}")).search
    assert search.budget_gflops == pytest.approx(total) and search.part_budgets == parts


@pytest.mark.parametrize("budget, key, says", [
    ("{body: 0.06, feet: 0.01}", "search.budget_gflops.feet", "allowed: total, body, face, hand"),
    ("{body: 0}", "search.budget_gflops.body", "greater than 0"),
    ("{hand: -0.01}", "search.budget_gflops.hand", "greater than 0"),
    ("{face: '0.01'}", "search.budget_gflops.face", "valid number"),
    ("{body: 0.06, total: 0}", "search.budget_gflops.total", "greater than 0"),
    ("-1", "search.budget_gflops.total", "greater than 0"),
    ("{total: 0.1}", "search.budget_gflops", "at least one of body, face, hand"),
    ("[0.1]", "search.budget_gflops", "a number (the budget on the total) or a mapping"),
])
def test_a_bad_budget_gflops_is_one_line_naming_its_key(tmp_path, budget, key, says):
    path = _write_experiment(tmp_path, search=f"{{budget_gflops: {budget}}}")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    msg = str(info.value)
    assert info.value.key == key and "\n" not in msg and msg.startswith(f"{path}: {key}: ") and says in msg, msg


def test_the_search_section_is_read_by_its_keys_as_written(tmp_path):
    """`budget_gflops` is read into a field named otherwise: a file may not name that field, and
    `dataclasses.replace` takes either."""
    path = _write_experiment(tmp_path, search="{gflops_budget: 0.1}")
    allowed = "allowed: sampler, n_trials, budget_gflops"
    with pytest.raises(ConfigError, match=f"search.gflops_budget: unknown key .*{allowed}"):
        load_experiment(path)
    search = SearchConfig(budget_gflops={"hand": 0.01}, n_trials=3)
    assert dataclasses.replace(search, n_trials=4).part_budgets == {"hand": 0.01}
    replaced = dataclasses.replace(search, budget_gflops=0.1)  # by its key, as a file writes it
    assert (replaced.budget_gflops, replaced.part_budgets) == (0.1, None)


def test_the_predictor_settings_defaults_and_values():
    from nasplat.config import PredictorConfig
    from nasplat.files import validate

    predictor = validate(PredictorConfig, {}, "p.yaml")
    assert (predictor.kind, predictor.warmup, predictor.screen, predictor.acquisition, predictor.beta) == (
        "mlp_ensemble", 20, 10, "ehvi", 1.0)
    written = {"kind": "gp", "warmup": 2, "screen": 1, "acquisition": "ucb", "beta": 0}
    assert validate(PredictorConfig, written, "p.yaml") == PredictorConfig(kind="gp", warmup=2, screen=1,
                                                                            acquisition="ucb", beta=0.0)


@pytest.mark.parametrize("predictor, key, says", [
    ({"kind": "trees"}, "kind", "'mlp_ensemble' or 'gp'"),
    ({"warmup": 1}, "warmup", "greater than or equal to 2"),
    ({"warmup": "20"}, "warmup", "valid integer"),
    ({"screen": 0}, "screen", "greater than or equal to 1"),
    ({"acquisition": "pi"}, "acquisition", "'ehvi', 'ei' or 'ucb'"),
    ({"beta": -0.5}, "beta", "greater than or equal to 0"),
    ({"beta": float("inf")}, "beta", "finite number"),
    ({"screens": 5}, "screens", "allowed: kind, warmup, screen, acquisition, beta"),
])
def test_a_bad_predictor_value_is_one_line_naming_its_key(predictor, key, says):
    from nasplat.config import PredictorConfig
    from nasplat.files import validate

    with pytest.raises(ConfigError) as info:
        validate(PredictorConfig, predictor, "p.yaml")
    msg = str(info.value)
    assert info.value.key == key and "\n" not in msg and msg.startswith(f"p.yaml: {key}: ") and says in msg, msg


def test_a_bad_predictor_in_an_experiment_names_the_file_and_the_whole_key(tmp_path):
    path = _write_experiment(tmp_path, search="{sampler: random, predictor: {kind: forest}}")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: search.predictor.kind: ") and "'mlp_ensemble' or 'gp'" in msg, msg


def test_a_predictor_loads_with_its_defaults_and_is_absent_by_default(tmp_path):
    exp = load_experiment(_write_experiment(tmp_path, search="{sampler: nsga2, predictor: {kind: gp}}"))
    assert exp.search.predictor == PredictorConfig(kind="gp", warmup=20, screen=10, acquisition="ehvi", beta=1.0)
    assert load_experiment(_write_experiment(tmp_path)).search.predictor is None
