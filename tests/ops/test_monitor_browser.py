"""The monitor in a real browser (headless Chromium): log in, watch a pushed file's transfer appear and
complete, follow its link to the Prefect run, and requeue a failed transfer after repairing its host."""

from __future__ import annotations

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.servers._common import free_port


def status_of(browser, transfer_id: int) -> str:
    try:
        cells = browser.find_elements(By.CSS_SELECTOR, f"#transfer-{transfer_id} td.status")
        return cells[0].text if cells else ""
    except StaleElementReferenceException:  # the page reloaded between finding the cell and reading it
        return ""


def wait_for_status(browser, transfer_id: int, status: str, timeout: float = 120) -> None:
    # The page reloads itself every few seconds; reading it again is what an operator's eyes do.
    WebDriverWait(browser, timeout, poll_frequency=0.5).until(
        lambda b: status_of(b, transfer_id) == status,
        f"transfer {transfer_id} never showed {status}",
    )


def log_in(browser, base: str, next_page: str) -> None:
    browser.get(f"{base}{next_page}")
    assert "/monitor/login" in browser.current_url  # not logged in yet: sent to the log-in page
    browser.find_element(By.ID, "login").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys("wrong")
    browser.find_element(By.ID, "sign-in").click()
    # A click returns before the answer is loaded: wait for the page it leads to, then check it.
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "error"), "no log-in error shown")
    assert browser.find_element(By.ID, "error").text == "unknown user or wrong password"
    browser.find_element(By.ID, "login").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys("admin")
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 30).until(lambda b: "/monitor/login" not in b.current_url, "still on the log-in page")
    assert browser.current_url == f"{base}{next_page}"
    assert browser.find_element(By.ID, "viewer").text == "admin"


def test_log_in_watch_a_transfer_complete_and_requeue_a_failed_one(browser, processes, prefect_server, tmp_path):
    client = processes.client
    remote = tmp_path / "site"
    client.create_destination("site1")
    client.create_host("site1-disk", "file", address=str(remote))
    client.attach_host("site1", "site1-disk")
    # A destination whose only host refuses connections, and which fails a transfer after one pass.
    client.create_destination("broken", max_starts=1, max_requeue=0)
    client.create_host("nowhere", "sftp", address=f"127.0.0.1:{free_port()}", login="pds", password="x")
    client.attach_host("broken", "nowhere")
    processes.start_mover("monitor-mover")
    base = processes.api_url

    log_in(browser, base, "/monitor/destinations/site1")
    assert browser.find_elements(By.CSS_SELECTOR, "#transfers tr[id^=transfer-]") == []

    source = tmp_path / "forecast.grib"
    source.write_bytes(b"GRIB" * 100_000)
    pushed = client.push(source, "site1", "2026/forecast.grib")
    (transfer,) = pushed["transfers"]
    wait_for_status(browser, transfer["id"], "Done")
    assert (remote / "2026" / "forecast.grib").read_bytes() == source.read_bytes()
    row = browser.find_element(By.ID, f"transfer-{transfer['id']}")
    assert "2026/forecast.grib" in row.text and "site1-disk" in row.text
    flow_run_id = client.transfer(transfer["id"])["flow_run_id"]
    run_link = row.find_element(By.CSS_SELECTOR, "a.run").get_attribute("href")
    assert run_link == f"{prefect_server.api_url.removesuffix('/api')}/runs/flow-run/{flow_run_id}"
    run = prefect_server._http.get(f"{prefect_server.api_url}/flow_runs/{flow_run_id}").json()
    assert run["name"].startswith("dispatch")

    # The overview counts it.
    browser.get(f"{base}/monitor")
    assert browser.find_element(By.CSS_SELECTOR, "#destination-site1 td.done").text == "1"

    failing = client.push(source, "broken", "f.grib")["transfers"][0]["id"]
    browser.get(f"{base}/monitor/destinations/broken")
    wait_for_status(browser, failing, "Failed")
    error = browser.find_element(By.CSS_SELECTOR, f"#transfer-{failing} td.error").text
    assert "nowhere" in error or "refused" in error.lower(), error

    # The operator adds a working fallback host, then requeues the transfer from the page.
    client.create_host("broken-fallback", "file", address=str(tmp_path / "fallback"))
    client.attach_host("broken", "broken-fallback")
    browser.find_element(By.CSS_SELECTOR, f"#transfer-{failing} form[action$='/requeue'] button").click()
    # A click on a form button returns before the answer page has loaded: wait for it to show.
    WebDriverWait(browser, 15, poll_frequency=0.2).until(
        lambda b: any(m.text == f"transfer {failing}: requeue done" for m in b.find_elements(By.ID, "message")),
        "the page never said the requeue was done",
    )
    wait_for_status(browser, failing, "Done")
    assert (tmp_path / "fallback" / "f.grib").read_bytes() == source.read_bytes()

    browser.get(f"{base}/monitor/transfers/{failing}")
    history = browser.find_element(By.ID, "history").text
    assert "requeued by admin" in history
    assert browser.find_element(By.ID, "status").text == "Done"
