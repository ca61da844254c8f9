"""The Airflow and MLflow UIs in a real browser: Debian's Chromium (/usr/bin/chromium), driven by Playwright.

Airflow: the deployment and servers of conftest.py (the ones test_dag's REST test uses: one start for both).
The README's path, "Dags → mrdib_pipeline → Trigger", on a paused DAG (as `airflow standalone` creates it):
the form, left at its defaults, must offer "Unpause mrdib_pipeline on trigger" (ticked) and an enabled
Trigger button (an error under "Run Parameters" once kept it disabled: an empty required `train_queue`);
the click opens the run's page, whose state badge must turn to Success, and the REST API must agree.
MLflow: the README's `mlflow ui` over the store that run wrote, and the README's path to the registry:
"Model training" → "Model registry" lists every registered model with its `champion` alias, and a model's
page its versions, `@champion` on the version the alias points at.

Screenshots go to pytest's temporary folder and, where MRDIB_SCREENSHOTS names a folder, there too.
Chromium is started with a fresh profile and no background networking; Playwright's own browser
download (`playwright install`) is not used. The browser tests skip where /usr/bin/chromium is missing.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
DAG_ID = "mrdib_pipeline"
RUN_SECONDS = 900   # the run of the form's defaults: DVC redoes what the earlier runs of the session left
UI_TIMEOUT_MS = 60_000   # a page or a click on 2 busy cores

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian package "
                                "`chromium`; .ci/run installs it): no browser for the UI tests")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile (a Playwright persistent context)."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory):
    """screenshot(page, name, full_page=True): a PNG in pytest's temporary folder (and $MRDIB_SCREENSHOTS)."""
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("MRDIB_SCREENSHOTS"):
        folders.append(Path(os.environ["MRDIB_SCREENSHOTS"]))
        folders[-1].mkdir(parents=True, exist_ok=True)

    def take(page, name: str, full_page: bool = True) -> Path:
        data = page.screenshot(full_page=full_page)
        for folder in folders:
            (folder / f"{name}.png").write_bytes(data)
        return folders[0] / f"{name}.png"

    return take


@pytest.fixture(scope="module")
def ui_run(servers, api, wait_for, browser, screenshot):
    """The README's UI path on a paused DAG: Dags → mrdib_pipeline → Trigger, the form left at its defaults,
    Trigger; then the run's page until its state badge says Success or Failed. What the browser showed."""
    base, started = servers
    wait_for("the API server", lambda: api(base, "/api/v2/monitor/health"), 120, started)
    wait_for("the DAG to be parsed", lambda: api(base, f"/api/v2/dags/{DAG_ID}"), 120, started)
    wait_for("the earlier runs to finish (one run at a time)", lambda: not api(
        base, f"/api/v2/dags/{DAG_ID}/dagRuns?state=queued&state=running")["total_entries"], 600, started)
    # The earlier run's configure task rewrote params.yaml, where the form takes its defaults: the DAG is
    # parsed again (a new version) and an open form would be redrawn without its dialog. Open it after that.
    runs = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-end_date&limit=1")["dag_runs"]
    if runs:
        ended = datetime.fromisoformat(runs[0]["end_date"])
        wait_for("the DAG parsed after the last run", lambda: datetime.fromisoformat(
            api(base, f"/api/v2/dags/{DAG_ID}/details")["last_parsed_time"]) > ended, 300, started)
    api(base, f"/api/v2/dags/{DAG_ID}", {"is_paused": True}, method="PATCH")   # as `airflow standalone` has it
    seen = SimpleNamespace(screens={}, run_id=None, badge=None)

    page = browser.new_page()
    page.set_viewport_size({"width": 1280, "height": 2000})   # the whole form, Trigger button included
    try:
        return trigger_from_the_form(page, base, started, api, screenshot, seen)
    except Exception:
        screenshot(page, "airflow-failure")   # what the browser showed when it went wrong
        raise


def trigger_with_the_defaults(page, seen, screenshot, attempts: int = 5) -> None:
    """Open Trigger Dag, read the form as drawn with its defaults, click its Trigger (when enabled) and land
    on the run's page. The page redraws itself now and then (the DAG parsed again after the last run's
    configure, its periodic refresh; a first click on a busy machine can land before its scripts listen),
    which closes or never opens the dialog: what vanished before Trigger was clicked is done again."""
    page.wait_for_load_state("networkidle")
    for attempt in range(1, attempts + 1):
        clicked = False
        try:
            page.get_by_role("button", name="Trigger Dag").click()
            form = page.get_by_role("dialog")
            expect(form.get_by_text("Run Parameters")).to_be_visible(timeout=15_000)
            expect(form.get_by_text("Train queue")).to_be_visible(timeout=15_000)   # the fields are drawn
            trigger = form.get_by_role("button", name="Trigger", exact=True)
            unpause = form.get_by_role("checkbox", name=f"Unpause {DAG_ID} on trigger")
            page.wait_for_timeout(1000)   # the form validates its defaults as it draws them
            seen.trigger_enabled = trigger.is_enabled(timeout=5_000)
            seen.unpause_offered = unpause.count() == 1
            seen.unpause_ticked = seen.unpause_offered and unpause.is_checked(timeout=5_000)
            seen.form_text = form.inner_text(timeout=5_000)
            seen.screens["form"] = screenshot(page, "airflow-trigger-form", full_page=False)
            if not seen.trigger_enabled:
                return
            trigger.click(timeout=5_000)
            clicked = True
            page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/[^/]+$"), timeout=60_000)
            return
        except (AssertionError, PlaywrightTimeoutError):
            screenshot(page, f"airflow-trigger-attempt-{attempt}")
            if clicked:   # a run may have started: never trigger a second one
                raise
            page.keyboard.press("Escape")
    raise AssertionError(f"the Trigger Dag form closed before its Trigger was clicked, {attempts} times")


def trigger_from_the_form(page, base, started, api, screenshot, seen) -> SimpleNamespace:
    page.goto(base + "/")   # the simple auth manager (every user an admin) logs the browser in
    page.get_by_role("link", name="Dags", exact=True).first.click()
    page.get_by_role("link", name=DAG_ID, exact=True).first.click()
    trigger_with_the_defaults(page, seen, screenshot)
    if not seen.trigger_enabled:
        return seen
    seen.run_id = urllib.parse.unquote(page.url.rsplit("/", 1)[1])

    page.set_viewport_size({"width": 1400, "height": 1000})
    badge = page.get_by_test_id("header-card").get_by_test_id("state-badge")
    deadline, reloaded = time.monotonic() + RUN_SECONDS, time.monotonic()
    while time.monotonic() < deadline:
        for name, (process, log) in started.items():
            assert process.poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
        seen.badge = badge.inner_text().strip() if badge.count() else None
        if seen.badge in ("Success", "Failed"):
            break
        if time.monotonic() - reloaded > 120:   # the page refreshes itself; a reload in case it stopped
            page.reload()
            reloaded = time.monotonic()
        page.wait_for_timeout(3000)
    page.wait_for_timeout(2000)   # the grid and the task table catch up with the badge
    seen.screens["run"] = screenshot(page, "airflow-finished-run")
    seen.page_text = page.locator("body").inner_text()
    page.close()
    seen.rest = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(seen.run_id, safe='')}")
    seen.dag = api(base, f"/api/v2/dags/{DAG_ID}")
    instances = api(base, f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(seen.run_id, safe='')}"
                          "/taskInstances?limit=100")["task_instances"]
    seen.task_states = {(t["task_id"], t["map_index"]): t["state"] for t in instances}
    return seen


def test_trigger_form_with_its_defaults_can_be_triggered(ui_run):
    assert "Run Parameters" in ui_run.form_text and ui_run.screens["form"].exists()
    assert ui_run.trigger_enabled, f"the Trigger button is disabled with the form's defaults:\n{ui_run.form_text}"
    assert ui_run.unpause_offered and ui_run.unpause_ticked, "a paused DAG's form must offer to unpause it (ticked)"


def test_the_triggered_run_finishes_with_success_in_the_browser(ui_run):
    assert ui_run.run_id, "nothing was triggered"
    assert ui_run.badge == "Success", (ui_run.badge, ui_run.task_states)
    assert ui_run.run_id in ui_run.page_text and ui_run.screens["run"].exists()
    # the REST API agrees, and the form's unpause was applied
    assert ui_run.rest["state"] == "success" and ui_run.rest["run_type"] == "manual", ui_run.rest
    conf = ui_run.rest["conf"]   # the form's defaults, the nullable ones left empty
    assert conf["train_queue"] is None and conf["train_pool"] is None, conf
    assert conf["tune"] is True, conf   # as the workspace's params.yaml (the REST run left tune.n_trials = 2)
    assert not ui_run.dag["is_paused"]
    assert ui_run.task_states and set(ui_run.task_states.values()) <= {"success", "skipped"}, ui_run.task_states
    assert {task for (task, _), state in ui_run.task_states.items() if state == "success"} >= {"configure", "train"}


@pytest.fixture(scope="module")
def mlflow_ui(deployment, ui_run, tmp_path_factory, free_port):
    """The README's `mlflow ui` over the store the deployment's runs wrote (the UI run's included), on a free
    127.0.0.1 port of the workspace; its base URL once it answers. Stopped by process group."""
    work, home, env = deployment
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-ui") / "mlflow.log"
    command = [MLFLOW, "ui", "--backend-store-uri", env["MLFLOW_TRACKING_URI"], "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                                                    "MLFLOW_DISABLE_TELEMETRY": "true"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/health", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"mlflow ui did not answer on {base}: {log.read_text()[-3000:]}"
                time.sleep(1)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def champions(base: str) -> dict[str, str]:
    """{registered model: the version its `champion` alias points at}, from the MLflow server's REST API."""
    with urllib.request.urlopen(base + "/api/2.0/mlflow/registered-models/search?max_results=100") as response:
        models = json.loads(response.read()).get("registered_models", [])
    return {m["name"]: next((a["version"] for a in m.get("aliases", []) if a["alias"] == "champion"), None)
            for m in models}


def test_mlflow_registry_page_shows_the_models_and_their_champion(mlflow_ui, browser, screenshot):
    expected = champions(mlflow_ui)
    assert "synthetic-vbpr" in expected and all(expected.values()), expected
    page = browser.new_page()
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(mlflow_ui + "/")
    # the README: MLflow 3 opens in its "GenAI" mode, the registry is in the "Model training" mode
    registry = page.get_by_role("link", name="Model registry", exact=True)
    expect(page.get_by_text("Model training", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Experiments", exact=True)).to_be_visible()   # the navigation is drawn
    expect(registry).to_have_count(0)
    page.get_by_text("Model training", exact=True).click()
    registry.click()
    rows = {name: page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
            for name in expected}
    for row in rows.values():
        expect(row).to_be_visible()
    promotion = page.get_by_role("dialog")   # "the new Model Registry UI", on a first visit: closed
    try:
        promotion.get_by_role("button", name="Close").click(timeout=5000)
    except PlaywrightTimeoutError:
        pass
    expect(promotion).to_have_count(0)
    page.wait_for_timeout(1000)   # its backdrop fades out
    shots = [screenshot(page, "mlflow-registered-models", full_page=False)]
    for name, version in expected.items():   # "@ champion: Version N" in the row's Aliased versions
        text = " ".join(rows[name].inner_text().split())
        assert re.search(rf"@ ?champion ?: Version {version}\b", text), (name, version, text)

    page.set_viewport_size({"width": 1600, "height": 1800})
    page.get_by_role("link", name="synthetic-vbpr", exact=True).click()   # the README: its versions, @champion
    champion = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {expected['synthetic-vbpr']}",
                                                                   exact=True))
    expect(champion).to_contain_text("champion")
    assert page.get_by_role("row").filter(has_text="champion").count() == 1, "one version carries the alias"
    champion.scroll_into_view_if_needed()
    shots.append(screenshot(page, "mlflow-model-versions", full_page=False))
    assert all(shot.exists() for shot in shots)
    page.close()
