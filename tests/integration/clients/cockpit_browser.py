"""Drives Debian's chromium (headless, through chromedriver and selenium) against
Cockpit inside the test machine, for tests/integration/test_cockpit.py.

    python3 cockpit_browser.py USER PASSWORD SCREENSHOTS ACTION [ARG...]

Logs in at http://127.0.0.1:9090 as USER with Cockpit's own login form (PAM),
opens agentd's page (/cockpit/@localhost/agentd/index.html) and does ACTION:

  agents              the names in the agents grid
  create NAME TPL     create agent NAME from template TPL, started, with the
                      page's form; waits until its row says active
  submit TITLE AGENT COMMAND
                      submit an --exec task on the Tasks tab, then follows its
                      card: the columns it was seen in, in order, until done
                      or failed (the board changes on agentd's signals)
  chat AGENT TEXT     send TEXT to AGENT on the Chat tab; the answer as it
                      streamed in, and the tokens line at its end
  goal INTENT PLAN    submit a goal with a plan of one's own (JSON) on the
                      Goals tab; the goal's states as they changed, and its
                      steps as the tree shows them (each with its parent)
  usage               the Usage tab: its chart's bars (day, agent, tokens)
                      and the plan line
  stop NAME           call Manager.StopAgent(NAME) from the page, as the page
                      does: agentd's answer (an error name, or "ok")

Prints one JSON object; saves a screenshot of each page it shows into
SCREENSHOTS as USER-ACTION-PAGE.png.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = "http://127.0.0.1:9090"
PAGE = f"{BASE}/cockpit/@localhost/agentd/index.html"
WAIT_S = 60


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):  # fmt: skip
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def login(driver: webdriver.Chrome, user: str, password: str) -> None:
    driver.get(BASE + "/")
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(ec.visibility_of_element_located((By.ID, "login-user-input"))).send_keys(user)
    driver.find_element(By.ID, "login-password-input").send_keys(password)
    button = driver.find_element(By.ID, "login-button")
    button.click()
    # the login page goes away when Cockpit's shell loads (or says why not)
    wait.until(lambda d: _gone(button) or d.find_element(By.ID, "login-error-message").text)
    message = driver.find_elements(By.ID, "login-error-message")
    if message and message[0].is_displayed() and message[0].text:
        raise SystemExit(f"cockpit login refused: {message[0].text}")


def _gone(element: object) -> bool:
    try:
        return not element.is_displayed()  # type: ignore[attr-defined]
    except StaleElementReferenceException:
        return True


def open_page(driver: webdriver.Chrome) -> None:
    driver.get(PAGE)
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true"
    )


def agent_names(driver: webdriver.Chrome) -> list[str]:
    return [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#agents tbody td.name")]


def error_text(driver: webdriver.Chrome) -> str:
    box = driver.find_element(By.ID, "error")
    return "" if box.get_attribute("hidden") is not None else box.text


def create(driver: webdriver.Chrome, name: str, template: str) -> dict:
    driver.find_element(By.ID, "create-name").send_keys(name)
    Select(driver.find_element(By.ID, "create-template")).select_by_value(template)
    driver.find_element(By.ID, "create-button").click()
    row = f'#agents tr[data-agent="{name}"] td.state'
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (
            error_text(d) or any(e.text == "active" for e in d.find_elements(By.CSS_SELECTOR, row))
        )
    )
    return {"error": error_text(driver), "agents": agent_names(driver)}


def submit(driver: webdriver.Chrome, title: str, agent: str, command: str) -> dict:
    driver.find_element(By.CSS_SELECTOR, '.tab[data-page="tasks"]').click()
    driver.find_element(By.ID, "submit-title").send_keys(title)
    Select(driver.find_element(By.ID, "submit-agent")).select_by_value(agent)
    driver.find_element(By.ID, "submit-exec").send_keys(command)
    driver.find_element(By.ID, "submit-button").click()
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_S * 2
    while time.monotonic() < deadline:
        try:
            column = driver.execute_script(
                "const c = [...document.querySelectorAll('.card')]"
                ".find(e => e.textContent.includes(arguments[0]));"
                "return c ? c.parentElement.dataset.column : null;",
                title,
            )
        except StaleElementReferenceException:
            continue  # the board was redrawn under us: read it again
        if column and (not seen or seen[-1] != column):
            seen.append(column)
        if column in ("done", "failed"):
            break
        time.sleep(0.05)  # the browser's DOM, read as it changes: not the page polling agentd
    return {"columns": seen, "error": error_text(driver)}


def usage(driver: webdriver.Chrome) -> dict:
    driver.find_element(By.CSS_SELECTOR, '.tab[data-page="usage"]').click()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: error_text(d) or d.find_elements(By.CSS_SELECTOR, "#quotas tbody tr")
    )
    bars = driver.execute_script(
        "return [...document.querySelectorAll('#usage-chart .bar span')].map(e =>"
        " ({day: e.parentElement.dataset.day, agent: e.dataset.agent,"
        " tokens: Number(e.dataset.tokens)}));"
    )
    return {"bars": bars, "plan": driver.find_element(By.ID, "plan").text,
            "error": error_text(driver)}  # fmt: skip


def chat(driver: webdriver.Chrome, agent: str, text: str) -> dict:
    driver.find_element(By.CSS_SELECTOR, '.tab[data-page="chat"]').click()
    Select(driver.find_element(By.ID, "chat-agent")).select_by_value(agent)
    driver.find_element(By.ID, "chat-message").send_keys(text)
    driver.find_element(By.ID, "chat-send").click()
    seen: list[str] = []  # the answer as it grew: streamed, not all at once
    deadline = time.monotonic() + WAIT_S * 4
    while time.monotonic() < deadline and not error_text(driver):
        answer = driver.execute_script(
            "const a = document.querySelector('#chat-log .assistant');"
            "return a ? a.textContent : '';"
        )
        if answer and (not seen or seen[-1] != answer):
            seen.append(answer)
        if driver.find_elements(By.CSS_SELECTOR, '#chat-log .meta[data-done="true"]'):
            break
        time.sleep(0.02)
    meta = driver.find_elements(By.CSS_SELECTOR, "#chat-log .meta")
    return {"answer": driver.find_element(By.CSS_SELECTOR, "#chat-log .assistant").text,
            "growth": len(seen), "meta": meta[-1].text if meta else "",
            "error": error_text(driver)}  # fmt: skip


def goal(driver: webdriver.Chrome, intent: str, plan: str) -> dict:
    driver.find_element(By.CSS_SELECTOR, '.tab[data-page="goals"]').click()
    driver.find_element(By.ID, "goal-intent").send_keys(intent)
    driver.execute_script("document.getElementById('goal-plan').value = arguments[0];", plan)
    driver.find_element(By.ID, "goal-submit").click()
    states: list[str] = []
    script = (
        "const g = [...document.querySelectorAll('.goal')]"
        ".find(e => e.querySelector('h2').textContent.includes(arguments[0]));"
        "if (!g) return null;"
        "return {state: g.dataset.state, steps: [...g.querySelectorAll('li.step')].map(li =>"
        " ({id: li.dataset.step, state: li.dataset.state,"
        " parent: li.parentElement.closest('li.step')?.dataset.step || null}))};"
    )
    found = None
    deadline = time.monotonic() + WAIT_S * 5
    while time.monotonic() < deadline and not error_text(driver):
        try:
            found = driver.execute_script(script, intent)
        except StaleElementReferenceException:
            continue
        if found and (not states or states[-1] != found["state"]):
            states.append(found["state"])
        if found and found["state"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    return {"states": states, "goal": found, "error": error_text(driver)}


def stop(driver: webdriver.Chrome, name: str) -> dict:
    answer = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const bus = cockpit.dbus("org.agentos.agentd1", { bus: "system" });
        bus.call("/org/agentos/agentd1", "org.agentos.agentd1.Manager", "StopAgent",
                 [arguments[0]])
            .then(() => done("ok"), err => done(err.name || String(err)));""",
        name,
    )
    return {"answer": answer}


def main(user: str, password: str, shots: str, action: str, *args: str) -> dict:
    driver = browser()
    driver.set_script_timeout(WAIT_S)
    out: dict = {}
    try:
        login(driver, user, password)
        open_page(driver)
        Path(shots).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(f"{shots}/{user}-{action}-agents.png")
        if action == "agents":
            out = {"agents": agent_names(driver)}
        elif action == "create":
            out = create(driver, *args)
            driver.save_screenshot(f"{shots}/{user}-{action}-created.png")
        elif action == "submit":
            out = submit(driver, *args)
            driver.save_screenshot(f"{shots}/{user}-{action}-tasks.png")
        elif action == "chat":
            out = chat(driver, *args)
            driver.save_screenshot(f"{shots}/{user}-{action}-chat.png")
        elif action == "goal":
            out = goal(driver, *args)
            driver.save_screenshot(f"{shots}/{user}-{action}-goals.png")
        elif action == "usage":
            out = usage(driver)
            driver.save_screenshot(f"{shots}/{user}-{action}-usage.png")
        elif action == "stop":
            out = stop(driver, *args)
        else:
            raise SystemExit(f"unknown action {action}")
    except Exception:
        Path(shots).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(f"{shots}/{user}-{action}-failed.png")
        print(f"url: {driver.current_url}\n{driver.page_source[:3000]}", file=sys.stderr)
        for entry in driver.get_log("browser"):
            print(f"console: {entry}", file=sys.stderr)
        raise
    finally:
        driver.quit()
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
