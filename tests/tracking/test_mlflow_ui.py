"""The MLflow UI as a user opens it after a search: headless Chromium (Debian `chromium` and
`chromium-driver`, driven by selenium) on the tracking server that `.ci/run` starts
(NASPLAT_TEST_MLFLOW_URI). The trial runs and the Pareto artifacts must be there, the URL
nasplat prints must open the Pareto front sorted by AP, and a registered export must show its
versions, source run and files. Screenshots go to the test's tmp dir.

Skipped when selenium, chromedriver (NASPLAT_CHROMEDRIVER, else on PATH) or the server is missing.
MLflow 3's UI is a React app: every wait is a bounded WebDriverWait on what the user would see."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from nasplat.cli.main import app

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"
N_TRIALS = 6
WAIT_S = 60  # the first page load compiles the React bundle in a cold browser on a busy machine


def _chromedriver() -> str:
    path = os.environ.get("NASPLAT_CHROMEDRIVER") or shutil.which("chromedriver")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("chromedriver not found (set NASPLAT_CHROMEDRIVER or apt-get install chromium-driver)")
    return path


@pytest.fixture
def server_uri() -> str:
    uri = os.environ.get("NASPLAT_TEST_MLFLOW_URI")
    if not uri:
        pytest.skip("NASPLAT_TEST_MLFLOW_URI is not set (.ci/run starts an MLflow server)")
    return uri


@pytest.fixture
def browser(tmp_path: Path):  # noqa: ANN201 - a generator fixture
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    driver_path = _chromedriver()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    chromium = os.environ.get("NASPLAT_CHROMIUM") or shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_text(driver, texts: list[str], shot: Path) -> str:  # noqa: ANN001
    """Wait until the page shows every one of `texts`; save a screenshot either way."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    body = ""

    def shown(d) -> bool:  # noqa: ANN001
        nonlocal body
        body = d.find_element(By.TAG_NAME, "body").text
        return all(t in body for t in texts)

    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(shown)
    except TimeoutException:
        driver.save_screenshot(str(shot))
        missing = [t for t in texts if t not in body]
        pytest.fail(f"the MLflow UI did not show {missing} within {WAIT_S} s (screenshot {shot}); page text: {body[:800]!r}")
    driver.save_screenshot(str(shot))
    return body


@pytest.mark.timeout(600)
def test_the_mlflow_ui_shows_the_trials_the_front_and_its_figures(tmp_path: Path, server_uri: str, browser) -> None:  # noqa: ANN001
    from mlflow.tracking import MlflowClient

    uri = server_uri
    name = f"ui-{uuid.uuid4().hex[:8]}"  # the server outlives the test: a fresh experiment each run
    exp_file = tmp_path / "experiment.yaml"
    exp_file.write_text(
        f"name: {name}\nspace: {SPACE}\ntrainer: {SPACE.parents[1] / 'trainers' / 'cpu_small.yaml'}\n"
        f"data: {{root: {tmp_path / 'data'}}}\noutput_dir: {tmp_path / 'out'}\n"
        f"search: {{sampler: nsga2, n_trials: {N_TRIALS}, budget_gflops: 0.1, objective: analytic}}\n"
        f"tracking: {{uri: '{uri}', experiment: {name}}}\n"
    )
    res = CliRunner().invoke(app, ["search", str(exp_file), "--local"])
    assert res.exit_code == 0, res.output
    printed = re.search(r"(http://\S+#/experiments/\S+)", res.output)
    assert printed, res.output
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    search = next(r for r in runs if r.data.tags.get("nasplat.role") == "search")
    trials = [r for r in runs if r.data.tags.get("nasplat.role") == "trial"]
    front = sorted((r for r in trials if r.data.tags.get("pareto") == "true"),
                   key=lambda r: -r.data.metrics["wholebody_AP"])
    assert len(trials) == N_TRIALS and front
    shots = tmp_path / "screenshots"
    shots.mkdir()
    base = uri.rstrip("/")

    # 1. The URL nasplat printed: the runs view, only the Pareto front, best AP first.
    assert unquote(printed.group(1)).startswith(f"{base}/#/experiments/{exp.experiment_id}/runs?")
    browser.get(printed.group(1))
    page = _wait_for_text(browser, [r.info.run_name for r in front], shots / "1-pareto-front.png")
    others = [r.info.run_name for r in trials if r.data.tags.get("pareto") != "true"]
    assert not [n for n in others if re.search(rf"\b{n}\b", page)], page[:800]
    positions = [page.index(r.info.run_name) for r in front]
    assert positions == sorted(positions), "the front is not sorted by whole-body AP, best first"

    # 2. Every trial, in a view filtered to trial runs (unfiltered, MLflow folds them under the
    #    search run), and the search run, with its description linking the best trial.
    from nasplat.tracking.client import runs_view_url

    browser.get(runs_view_url(base, exp.experiment_id, search_filter="tags.`nasplat.role` = 'trial'"))
    _wait_for_text(browser, [r.info.run_name for r in trials] + [f"{len(trials)} matching runs"], shots / "2-trials.png")
    browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{search.info.run_id}?workflowType=machine_learning")
    _wait_for_text(browser, [search.info.run_name, "Best trial", front[0].info.run_name], shots / "3-search-run.png")

    # 3. The search run's artifacts: the Pareto PNG and the offline HTML.
    browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{search.info.run_id}/artifacts?workflowType=machine_learning")
    _wait_for_text(browser, ["pareto_front.png", "pareto_front.html"], shots / "4-artifacts.png")
    _open_artifact(browser, "pareto_front.png")
    _wait_for_image(browser, shots / "5-pareto-png.png")
    assert len(list(shots.glob("*.png"))) == 5


def _open_artifact(driver, name: str) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    node = WebDriverWait(driver, WAIT_S).until(
        ec.element_to_be_clickable((By.XPATH, f"//*[normalize-space(text())='{name}']")))
    node.click()


def _wait_for_image(driver, shot: Path) -> None:  # noqa: ANN001
    """The artifact view shows the PNG as a loaded <img> (the figure is 770 px wide)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    script = "return Array.from(document.images).some(i => i.complete && i.naturalWidth > 300)"
    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(lambda d: d.execute_script(script))
    except TimeoutException:
        driver.save_screenshot(str(shot))
        pytest.fail(f"the Pareto PNG did not render within {WAIT_S} s (screenshot {shot})")
    driver.save_screenshot(str(shot))


@pytest.mark.timeout(600)
def test_the_mlflow_ui_shows_a_registered_export_its_versions_and_files(tmp_path: Path, server_uri: str, browser) -> None:  # noqa: ANN001
    """An export as `nasplat export` registers it (`register_export`), twice: the model page lists
    both versions with the export's tags, a version page links its source run, and that run's
    artifacts hold the logged model with the export's files (MLmodel, the model card, previewed)."""
    from nasplat.models import build_static
    from nasplat.space import load_space
    from nasplat.tracking.registry import register_export

    space = load_space(SPACE)
    arch = space.min_arch()
    net = build_static(arch, space.all_blocks_per_module(), seed=0).eval()
    meta = {"name": "best", "arch": arch.to_flat(), "gflops": {"body": 0.1, "face": 0.01, "hand": 0.01, "total": 0.13},
            "params": sum(p.numel() for p in net.parameters()), "metrics": {"wholebody": {"AP": 0.25, "AR": 0.5}},
            "origin": {"study": "ui-study", "trial": 4}}
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# ZoomNet subnet for the browser\n")
    name = f"ui-model-{uuid.uuid4().hex[:8]}"
    first = register_export(server_uri, name, name, net, meta, [card])
    second = register_export(server_uri, name, name, net, meta, [card])
    assert (first.version, second.version) == ("1", "2")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    base = server_uri.rstrip("/")

    browser.get(f"{base}/#/models/{name}")
    _wait_for_text(browser, [name, "ZoomNet subnets exported by nasplat", "Version 1", "Version 2", "origin.trial"],
                   shots / "1-model.png")
    browser.get(f"{base}/#/models/{name}/versions/2")
    _wait_for_text(browser, ["Version 2", "Source Run", "export best", "origin.study", "ui-study"], shots / "2-version.png")
    _open_artifact(browser, "export best")  # the source run's link
    _wait_for_text(browser, ["export best"], shots / "3-source-run.png")
    assert second.run_id in browser.current_url
    browser.get(browser.current_url.split("?")[0].rstrip("/") + "/artifacts")
    _wait_for_text(browser, ["model"], shots / "4-artifacts.png")
    _open_artifact(browser, "model")
    _wait_for_text(browser, ["MLmodel", "MODEL_CARD.md", "requirements.txt"], shots / "5-model-files.png")
    _open_artifact(browser, "MODEL_CARD.md")
    _wait_for_text(browser, ["ZoomNet subnet for the browser"], shots / "6-model-card.png")  # the card, previewed
    assert len(list(shots.glob("*.png"))) == 6
