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
  details TASK [ARTIFACT]
                      click task TASK's card on the Tasks tab: the details shown
                      under the board (title, status, result, the steps' tools,
                      the artifacts' names) and ARTIFACT's text, shown by its
                      Show button
  filter KIND VALUE   choose VALUE in the Tasks tab's KIND filter (project or
                      agent): the cards left (task, agent, project)
  chat AGENT TEXT     send TEXT to AGENT on the Chat tab; the answer as it
                      streamed in, and the tokens line at its end
  goal INTENT PLAN    submit a goal with a plan of one's own (JSON) on the
                      Goals tab; the goal's states as they changed, and its
                      steps as the tree shows them (each with its parent)
  usage               the Usage tab: its chart's bars (day, agent, tokens)
                      and the plan line
  stop NAME           call Manager.StopAgent(NAME) from the page, as the page
                      does: agentd's answer (an error name, or "ok")
  call IFACE METHOD ARGS
                      any call of agentd's from the page (ARGS: a JSON list):
                      agentd's answer (an error name, or "ok")
  journal NAME        click agent NAME's name: its details and journal; then
                      its Stop button, and wait for the runtime's "stopping"
                      line to arrive in the journal shown (followed live)

Prints one JSON object; saves a screenshot of each page it shows into
SCREENSHOTS as USER-ACTION-PAGE.png.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
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
    # the login page goes away when Cockpit's shell loads (or says why not); the
    # message element can be read just as the page is replaced (a CI run of
    # 2026-12-01 got StaleElementReferenceException there): read it again
    stale = (NoSuchElementException, StaleElementReferenceException)
    WebDriverWait(driver, WAIT_S, ignored_exceptions=stale).until(
        lambda d: _gone(button) or d.find_element(By.ID, "login-error-message").text
    )
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


def details(driver: webdriver.Chrome, task: str, artifact: str = "") -> dict:
    driver.find_element(By.CSS_SELECTOR, '.tab[data-page="tasks"]').click()
    card = f'.card[data-task="{task}"]'
    WebDriverWait(driver, WAIT_S).until(ec.element_to_be_clickable((By.CSS_SELECTOR, card)))
    driver.find_element(By.CSS_SELECTOR, card).click()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: error_text(d) or d.find_element(By.ID, "task-details").is_displayed()
    )
    out = {
        "error": error_text(driver),
        "title": driver.find_element(By.ID, "task-title").text,
        "status": driver.find_element(By.ID, "task-details").get_attribute("data-status"),
        "result": driver.find_element(By.ID, "task-result").text,
        "steps": [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#task-steps .tool")],
        "artifacts": [
            e.get_attribute("data-artifact")
            for e in driver.find_elements(By.CSS_SELECTOR, "#task-artifacts tbody tr")
        ],
    }
    if artifact:
        row = f'#task-artifacts tr[data-artifact="{artifact}"] button'
        driver.find_element(By.CSS_SELECTOR, row).click()  # Show (before Download)
        view = driver.find_element(By.ID, "artifact-view")
        WebDriverWait(driver, WAIT_S).until(
            lambda d: error_text(d) or view.get_attribute("data-artifact") == artifact
        )
        out["artifact_text"] = view.text
        out["error"] = error_text(driver)
    return out


def filter_board(driver: webdriver.Chrome, kind: str, value: str) -> dict:
    driver.find_element(By.CSS_SELECTOR, '.tab[data-page="tasks"]').click()
    select = f'#filter-{kind} option[value="{value}"]'
    WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, select)))
    Select(driver.find_element(By.ID, f"filter-{kind}")).select_by_value(value)
    cards = driver.execute_script(
        "return [...document.querySelectorAll('.card')]"
        ".map(c => [c.dataset.task, c.dataset.agent, c.dataset.project]);"
    )
    return {"error": error_text(driver), "cards": cards}


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


def journal(driver: webdriver.Chrome, name: str) -> dict:
    row = f'#agents tr[data-agent="{name}"]'
    driver.find_element(By.CSS_SELECTOR, f"{row} td.name").click()
    log = driver.find_element(By.ID, "agent-journal")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: error_text(d) or log.get_attribute("data-loaded") == "true"
    )

    def lines() -> list[str]:
        return [e.text for e in log.find_elements(By.CSS_SELECTOR, ".line")]

    before = lines()
    driver.find_element(By.CSS_SELECTOR, f"{row} button").click()  # Stop: it is running
    WebDriverWait(driver, WAIT_S).until(
        lambda d: error_text(d) or any("stopping" in x for x in lines()[len(before) :])
    )
    facts = driver.find_element(By.ID, "agent-facts").text
    return {"error": error_text(driver), "before": before, "after": lines()[len(before) :],
            "facts": facts}  # fmt: skip


def call(driver: webdriver.Chrome, iface: str, method: str, args: str) -> dict:
    answer = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const bus = cockpit.dbus("org.agentos.agentd1", { bus: "system" });
        bus.call("/org/agentos/agentd1", "org.agentos.agentd1." + arguments[0], arguments[1],
                 JSON.parse(arguments[2]))
            .then(() => done("ok"), err => done(err.name || String(err)));""",
        iface,
        method,
        args,
    )
    return {"answer": answer}


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
        elif action == "details":
            out = details(driver, *args)
            driver.save_screenshot(f"{shots}/{user}-{action}-task.png")
        elif action == "filter":
            out = filter_board(driver, *args)
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
        elif action == "call":
            out = call(driver, *args)
        elif action == "journal":
            out = journal(driver, *args)
            driver.save_screenshot(f"{shots}/{user}-{action}-agent.png")
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
