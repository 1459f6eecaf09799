/* An agent's details under the grid: what Observe.Fleet says of it, and its
   journal, followed live through Observe.ReadAgentJournal's long poll.

   Why not Cockpit's journal API: it runs journalctl as the person logged in,
   and an agent's lines are its own UID's and PID 1's, which a person reads only
   as a member of systemd-journal or adm (the whole system's journal). agentd
   reads exactly the lines `agentctl agent logs` shows, for the agent's owner or
   an administrator, and decides who that is. Opened by a click on an agent's
   name; a newer click, or Close, ends the follow (its generation is stale). */
"use strict";

let shownAgent = "";
let following = 0; // the follow's generation: a long poll of an older one is dropped
const JOURNAL_LINES = 200; // shown at first, and at most kept in the page ×5
const JOURNAL_WAIT_MS = 15000; // under Cockpit's and sd-bus's call timeouts

const PRIORITY_CLASS = ["err", "err", "err", "err", "warn", "", "", "debug"];

function journalLine(entry) {
    const at = entry.at ? new Date(entry.at * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
    const line = el("div", `line ${PRIORITY_CLASS[entry.priority] || ""}`.trim(),
                    `${at} ${entry.identifier}[${entry.pid}]: ${entry.message}`);
    return line;
}

function renderAgentFacts(agent) {
    const facts = [
        ["State", agent.state], ["Template", agent.template], ["Owner", agent.owner],
        ["UID", agent.uid], ["Unit", `agent-${agent.name}.service`],
        ["Memory", bytes(agent.memory_current)], ["Processes", agent.tasks_current],
        ["Task", agent.task_title ? `#${agent.task_id} ${agent.task_title}` : ""],
    ];
    $("agent-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", "", k),
        el("dd", "", v === null || v === undefined ? "" : String(v))]));
}

function followJournal(name, generation, cursor) {
    call("Observe", "ReadAgentJournal", [name, cursor, JOURNAL_LINES, JOURNAL_WAIT_MS])
            .then(([entries, next]) => {
                if (generation !== following)
                    return;
                const log = $("agent-journal");
                log.append(...JSON.parse(entries).map(journalLine));
                while (log.childElementCount > JOURNAL_LINES * 5)
                    log.firstElementChild.remove();
                log.dataset.loaded = "true";
                log.scrollTop = log.scrollHeight;
                followJournal(name, generation, next);
            })
            .catch(err => {
                if (generation === following)
                    showError(err);
            });
}

function showAgent(name) {
    const agent = agents.find(a => a.name === name);
    if (!agent)
        return;
    renderAgentFacts(agent);
    $("agent-name").textContent = name;
    $("agent-details").hidden = false;
    if (name === shownAgent)
        return;
    shownAgent = name;
    following += 1;
    const log = $("agent-journal");
    log.replaceChildren();
    delete log.dataset.loaded;
    followJournal(name, following, "");
}

function refreshAgentDetails() {
    if (shownAgent && agents.some(a => a.name === shownAgent))
        showAgent(shownAgent);
}

function closeAgent() {
    shownAgent = "";
    following += 1;
    $("agent-details").hidden = true;
}
