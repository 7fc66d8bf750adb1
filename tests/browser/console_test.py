#!/usr/bin/env python3
"""Drives the admin console in headless Chromium against the running admin_console example.

It starts the example (`--port 0 --token T --seed-demo`), reads the port it prints, and checks:

- the API refuses a request without a token, or with a wrong one (403), and serves the page with
  a Content-Security-Policy that lets it run only its own script and style;
- the page shows the 403 in its status line for a wrong token; with the right one, the breakers
  panel lists the three channels and the dead letters load;
- the letters whose error text is markup (`<script>alert(1)</script>`,
  `<img src=x onerror=alert(1)>`) render as text: the text is a cell's textContent, no alert
  fires, no element was injected;
- filtering (status, type) and selecting three rows, then Dismiss with a reason: the page shows
  3/3 and the summed result, and the API says those three ids are dismissed;
- "select all on page" and Categorize (category, severity, tags) change every row on the page;
- the browser logged no Content-Security-Policy violation.

Screenshots go to --out (and to --screenshots DIR when given, e.g. docs/). Every wait has a
timeout; the server is stopped in `finally`, and it stops itself after --exit-after anyway.

Usage: console_test.py --binary build/ci-gcc/examples/admin_console/admin_console
           [--chromium chromium] [--chromedriver chromedriver] [--out DIR] [--screenshots DIR]
Run it with a Python that has Selenium (Debian: /usr/bin/python3 and python3-selenium).
"""
import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

TOKEN = "browser-test-token"
WAIT = 20  # seconds, for any one thing the page should show


class Server:
    """The admin_console example on an ephemeral port; its output is drained by a thread."""

    def __init__(self, binary):
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--token", TOKEN, "--seed-demo", "--exit-after", "170"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + WAIT
        self.base = None
        while self.base is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the server printed no 'listening on' line in %d s:\n%s"
                                     % (WAIT, "".join(self.output)))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("the server exited (%s) before listening:\n%s"
                                     % (self.proc.wait(), "".join(self.output)))
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
            if match:
                self.base = match.group(1)

    def _drain(self):
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def api(base, path, token=TOKEN, method="GET", body=None):
    """(status, parsed JSON body, headers) of one API call."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as e:
        raw, status, headers = e.read(), e.code, e.headers
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return status, parsed, headers


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print("ok: " + message, flush=True)


def wait_for(driver, what, predicate):
    """Waits until predicate(driver) is truthy (re-tried when the page re-rendered a node)."""
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1,
                             ignored_exceptions=[StaleElementReferenceException]).until(predicate)
    except Exception as e:
        status = driver.find_element(By.ID, "status").text
        raise AssertionError("timed out after %d s waiting for %s (status line: %r): %s"
                             % (WAIT, what, status, e)) from None


def texts(driver, selector):
    return [e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def letter_rows(driver):
    """[(id, type, status)] of the rows the letters table shows."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#letters tbody tr.letter')).map(function (r) {"
        "  return [r.getAttribute('data-id'), r.querySelector('.letter-type').textContent,"
        "          r.querySelector('.letter-status').textContent]; });")


def apply_filters(driver, status="", type_="", text=""):
    before = driver.find_element(By.ID, "letters").get_attribute("data-loaded")
    Select(driver.find_element(By.ID, "filter-status")).select_by_value(status)
    for field, value in (("filter-type", type_), ("filter-text", text)):
        box = driver.find_element(By.ID, field)
        box.clear()
        if value:
            box.send_keys(value)
    driver.find_element(By.ID, "apply-filters").click()
    wait_for(driver, "the filtered letters",
             lambda d: d.find_element(By.ID, "letters").get_attribute("data-loaded") != before)


def run_bulk(driver, button, what, done):
    """Clicks a bulk button, waits until the result line satisfies done(text) and the letters
    were reloaded after it (so that the next step does not race the page's refresh)."""
    before = driver.find_element(By.ID, "letters").get_attribute("data-loaded")
    driver.find_element(By.ID, button).click()
    wait_for(driver, what, lambda d: done(d.find_element(By.ID, "bulk-result").text))
    wait_for(driver, "the letters reloaded after " + what,
             lambda d: d.find_element(By.ID, "letters").get_attribute("data-loaded") != before)
    return driver.find_element(By.ID, "bulk-result").text


def screenshot(driver, name, dirs):
    for folder in dirs:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        driver.save_screenshot(path)
        print("screenshot: %s (%d bytes)" % (path, os.path.getsize(path)), flush=True)


def run(args, server, driver):
    base = server.base
    shots = [args.out] + ([args.screenshots] if args.screenshots else [])

    # The API: no token, a wrong token -> 403; the page itself needs none and carries the CSP.
    for token, label in ((None, "without a token"), ("wrong-token", "with a wrong token")):
        status, body, _ = api(base, "/api/breakers", token=token)
        check(status == 403 and isinstance(body, dict) and "error" in body,
              "GET /api/breakers %s answers 403 with an error (%s %r)" % (label, status, body))
    status, body, _ = api(base, "/api/dead-letters", token=None)
    check(status == 403, "reads need a token too: GET /api/dead-letters without one is 403")
    with urllib.request.urlopen(base + "/", timeout=10) as response:
        csp = response.headers.get("Content-Security-Policy", "")
        page = response.read().decode()
    check("script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp,
          "the page is served with CSP %r" % csp)
    check("<script>" not in page and "style=" not in page,
          "the page has no inline script or style attribute")

    driver.get(base + "/")
    wait_for(driver, "the console script to run", lambda d: d.find_element(
        By.TAG_NAME, "html").get_attribute("data-console") == "ready")
    # Any alert the page might raise is recorded here (WebDriver's script is not subject to CSP).
    driver.execute_script("window.__alerts = []; window.alert = function (m) {"
                          " window.__alerts.push(String(m)); };")

    token_box = driver.find_element(By.ID, "token")
    token_box.send_keys("wrong-token")
    driver.find_element(By.ID, "save-token").click()
    wait_for(driver, "the status line to show the 403",
             lambda d: "403" in d.find_element(By.ID, "status").text)
    check(True, "a wrong token shows %r" % driver.find_element(By.ID, "status").text)

    token_box.clear()
    token_box.send_keys(TOKEN)
    driver.find_element(By.ID, "save-token").click()
    wait_for(driver, "the breakers panel to list email, sms and push",
             lambda d: {"email", "sms", "push"} <= set(texts(d, "#breakers .breaker-name")))
    check(True, "the breakers panel lists %s" % texts(driver, "#breakers .breaker-name"))
    wait_for(driver, "dead letters", lambda d: len(letter_rows(d)) > 0)
    check(driver.execute_script("return sessionStorage.getItem('bulwark.console.token')") == TOKEN,
          "the token is kept in sessionStorage")

    # Markup in an error text is shown as text.
    apply_filters(driver, text="alert(1)")
    wait_for(driver, "the two letters with markup in their error",
             lambda d: len(letter_rows(d)) >= 2)
    errors = texts(driver, "#letters tbody td.letter-error")
    check("<script>alert(1)</script>" in errors and "<img src=x onerror=alert(1)>" in errors,
          "the markup letters' error cells hold the markup as text: %r" % errors)
    injected = driver.execute_script(
        "return {img: document.querySelectorAll('img').length,"
        "        scripts: Array.from(document.scripts).map(function (s) { return s.src; }),"
        "        alerts: window.__alerts};")
    check(injected["img"] == 0, "no <img> element was injected")
    check(len(injected["scripts"]) == 1 and injected["scripts"][0].endswith("/console.js"),
          "the only script is console.js: %r" % injected["scripts"])
    check(injected["alerts"] == [], "no alert() ran")
    try:
        driver.switch_to.alert
        raise AssertionError("an alert dialog is open")
    except NoAlertPresentException:
        check(True, "no alert dialog is open")

    # Filter, select three, dismiss them with a reason.
    apply_filters(driver, status="pending", type_="sms")
    rows = wait_for(driver, "at least three pending sms letters",
                    lambda d: (lambda r: r if len(r) >= 3 else None)(letter_rows(d)))
    check(all(t == "sms" and s == "pending" for _, t, s in rows),
          "the filter shows only pending sms letters (%d rows)" % len(rows))
    chosen = [r[0] for r in rows[:3]]
    for letter_id in chosen:
        driver.find_element(
            By.CSS_SELECTOR, "#letters tr.letter[data-id='%s'] .select-letter" % letter_id).click()
    wait_for(driver, "3 selected",
             lambda d: d.find_element(By.ID, "selected-count").text == "3 selected")
    reason = "duplicate of incident 42"
    driver.find_element(By.ID, "dismiss-reason").send_keys(reason)
    run_bulk(driver, "bulk-dismiss", "the dismiss", lambda text: "changed 3" in text)
    check(driver.find_element(By.ID, "bulk-progress").text.startswith("3/3"),
          "the progress shows 3/3; the result: %r" % driver.find_element(By.ID, "bulk-result").text)
    driver.execute_script("document.getElementById('bulk').scrollIntoView();")
    screenshot(driver, "console-bulk-dismiss.png", shots)
    for letter_id in chosen:
        status, letter, _ = api(base, "/api/dead-letters/" + urllib.parse.quote(letter_id))
        check(status == 200 and letter.get("status") == "dismissed",
              "the API says %s is dismissed (%s, %r)" % (letter_id, status,
                                                          letter.get("status") if isinstance(letter, dict) else letter))
    status, audit, _ = api(base, "/api/audit?limit=10")
    actions = [e.get("action") for e in (audit or {}).get("entries", [])]
    check(status == 200 and any("dismiss" in str(a) for a in actions),
          "the audit log has the dismiss (%r)" % actions)

    # Select all on the page, categorize them.
    apply_filters(driver, type_="email")
    rows = wait_for(driver, "email letters", lambda d: letter_rows(d) or None)
    driver.find_element(By.ID, "select-page").click()
    wait_for(driver, "every row selected",
             lambda d: d.find_element(By.ID, "selected-count").text == "%d selected" % len(rows))
    driver.find_element(By.ID, "categorize-category").send_keys("provider-outage")
    Select(driver.find_element(By.ID, "categorize-severity")).select_by_value("high")
    driver.find_element(By.ID, "categorize-tags").send_keys("incident-42, smtp")
    run_bulk(driver, "bulk-categorize", "the categorize",
             lambda text: "categorize: requested %d" % len(rows) in text)
    chosen = {r[0] for r in rows}
    wait_for(driver, "the rows to show the new category", lambda d: chosen <= set(
        d.execute_script(
            "return Array.from(document.querySelectorAll('#letters tbody tr.letter')).filter("
            "  function (r) { return r.querySelector('.letter-category').textContent =="
            "                        'provider-outage'; }).map(function (r) {"
            "  return r.getAttribute('data-id'); });")))
    status, listed, _ = api(base, "/api/dead-letters?type=email&category=provider-outage&limit=500")
    ids = {item["id"] for item in (listed or {}).get("items", [])}
    check(status == 200 and chosen <= ids,
          "the API lists all %d selected email letters under category provider-outage" % len(rows))
    status, one, _ = api(base, "/api/dead-letters/" + urllib.parse.quote(rows[0][0]))
    check("incident-42" in one.get("tags", []) and "smtp" in one.get("tags", []),
          "the tags were added: %r" % one.get("tags"))

    # Fix the same page: the RedriveFixer takes the provider outages (smtp 503) and redrives them.
    # The rows as shown now (traffic may have added a letter since).
    rows = letter_rows(driver)
    fixable = [r[0] for r in rows if r[2] == "pending"]
    outage = api(base, "/api/dead-letters?type=email&status=pending&error_class=provider_outage"
                       "&limit=500")[1]
    outage_ids = {item["id"] for item in (outage or {}).get("items", [])} & set(fixable)
    driver.find_element(By.ID, "select-page").click()
    wait_for(driver, "every row selected again",
             lambda d: d.find_element(By.ID, "selected-count").text == "%d selected" % len(rows))
    result = run_bulk(driver, "bulk-fix", "the fix",
                      lambda text: "fix: requested %d" % len(rows) in text)
    check("success %d" % len(outage_ids) in result and "redriven %d" % len(outage_ids) in result,
          "the fix redrove the %d provider outages: %r" % (len(outage_ids), result))
    wait_for(driver, "the fixers panel to show the redrive fixer", lambda d: any(
        "redrive" == t for t in texts(d, "#fixers tbody td:first-child")))
    for letter_id in sorted(outage_ids)[:3]:
        status, letter, _ = api(base, "/api/dead-letters/" + urllib.parse.quote(letter_id))
        check(status == 200 and letter.get("status") == "reprocessed",
              "the API says %s was redriven (reprocessed)" % letter_id)

    driver.execute_script("window.scrollTo(0, 0);")
    screenshot(driver, "console-overview.png", shots)

    # No Content-Security-Policy violation was logged (an inline script or style would be one).
    logs = driver.get_log("browser")
    csp = [entry["message"] for entry in logs if "Content Security Policy" in entry["message"]]
    check(not csp, "no CSP violation in the browser's log (%d entries): %r" % (len(logs), csp))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the admin_console executable")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "chromedriver")
    parser.add_argument("--out", default=".", help="where the screenshots go")
    parser.add_argument("--screenshots", help="a second folder for the screenshots (docs/)")
    args = parser.parse_args()

    started = time.monotonic()
    server = Server(args.binary)
    driver = None
    profile = tempfile.mkdtemp(prefix="bulwark-console-test-")
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-gpu", "--no-first-run",
                     "--user-data-dir=" + profile):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver),
                                  options=options)
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        run(args, server, driver)
    except AssertionError as e:
        print("FAILED: %s" % e, flush=True)
        if driver is not None:
            try:
                screenshot(driver, "console-failure.png", [args.out])
            except Exception:  # the browser may be gone
                pass
        print("server output:\n" + "".join(server.output), flush=True)
        return 1
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
    print("browser test passed in %.1f s" % (time.monotonic() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
