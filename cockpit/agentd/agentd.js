/* agentd's Cockpit page: the agents and the task board of the person logged in.

   Invariant: every call is a D-Bus call to agentd made by Cockpit's bridge,
   which runs as the logged-in user, so agentd's own policy decides (by UID)
   what they see and may do; this page holds no rights of its own and shows
   agentd's refusals as they are. Updates come from agentd's signals
   (AgentNew, AgentRemoved, AgentChanged, TaskChanged, ApprovalRequested,
   ApprovalAnswered): each one refreshes what it concerns; nothing polls (a
   chat's stream and an agent's journal are long polls, answered as soon as
   there is something). agent.js and task.js hold the details panels. */
"use strict";

const BUS = "org.agentos.agentd1";
const ROOT = "/org/agentos/agentd1";
const client = cockpit.dbus(BUS, { bus: "system" });

// The board's columns: agentd's task statuses (agentd/tasks/model.py) grouped.
const COLUMNS = [
    ["pending", "Pending", ["pending"]],
    ["in_progress", "In progress", ["in_progress"]],
    ["blocked", "Blocked or awaiting approval", ["blocked", "awaiting_approval"]],
    ["done", "Done", ["completed"]],
    ["failed", "Failed", ["failed", "cancelled", "dead_lettered"]],
];

function $(id) { return document.getElementById(id); }

function call(iface, method, args) {
    return client.call(ROOT, `${BUS}.${iface}`, method, args);
}

function showError(err) {
    const box = $("error");
    if (!err) {
        box.hidden = true;
        return;
    }
    const name = (err.name || "").replace(`${BUS}.Error.`, "");
    box.textContent = name ? `${name}: ${err.message}` : String(err.message || err);
    box.hidden = false;
}

function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls)
        e.className = cls;
    if (text !== undefined)
        e.textContent = text;
    return e;
}

function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls)
        td.className = cls;
    return td;
}

function bytes(n) {
    if (n === null || n === undefined)
        return "";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
        n /= 1024;
        i++;
    }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// -- agents ------------------------------------------------------------------------

let agents = [];

function agentButton(label, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", () => action().then(() => showError(null), showError));
    return b;
}

function renderAgents() {
    const body = $("agents").querySelector("tbody");
    body.replaceChildren();
    for (const a of agents) {
        const tr = document.createElement("tr");
        tr.dataset.agent = a.name;
        const name = cell(a.name, "name");
        name.addEventListener("click", () => showAgent(a.name)); // agent.js
        tr.append(
            name,
            cell(a.state, a.state === "active" ? "state state-active" : "state"),
            cell(a.template),
            cell(a.owner),
            cell(bytes(a.memory_current)),
            cell(a.cpu_usage_nsec === null ? "" : `${(a.cpu_usage_nsec / 1e9).toFixed(1)} s`),
            cell(a.tasks_current),
            cell(a.task_title ? `#${a.task_id} ${a.task_title}` : ""),
            cell(a.approvals_pending || ""),
        );
        const actions = document.createElement("td");
        const running = a.state === "active" || a.state === "activating";
        actions.append(
            running
                ? agentButton("Stop", () => call("Manager", "StopAgent", [a.name]))
                : agentButton("Start", () => call("Manager", "StartAgent", [a.name])),
            agentButton("Remove", () => call("Manager", "RemoveAgent", [a.name, false])),
        );
        tr.append(actions);
        body.append(tr);
    }
    $("no-agents").hidden = agents.length > 0;
    const select = $("submit-agent");
    const chosen = select.value;
    select.replaceChildren(new Option("any", ""));
    for (const a of agents)
        select.append(new Option(a.name, a.name));
    select.value = chosen;
    const chat = $("chat-agent");
    const talking = chat.value;
    chat.replaceChildren(...agents.map(a => new Option(a.name, a.name)));
    if (agents.some(a => a.name === talking))
        chat.value = talking;
}

function refreshAgents() {
    return call("Observe", "Fleet", [])
            .then(([snapshot]) => {
                agents = JSON.parse(snapshot).agents;
                renderAgents();
                refreshAgentDetails(); // agent.js
                $("status").textContent = `${agents.length} agent(s)`;
            })
            .catch(showError);
}

function loadTemplates() {
    return call("Manager", "ListTemplates", [])
            .then(([rows]) => {
                const select = $("create-template");
                select.replaceChildren();
                for (const [name, description] of rows) {
                    const option = new Option(name, name);
                    option.title = description;
                    select.append(option);
                }
            })
            .catch(showError);
}

function createAgent(event) {
    event.preventDefault();
    const name = $("create-name").value.trim();
    const start = $("create-start").checked;
    call("Manager", "CreateAgent", [name, $("create-template").value, {}])
            .then(() => (start ? call("Manager", "StartAgent", [name]) : null))
            .then(() => {
                $("create-name").value = "";
                showError(null);
            })
            .catch(showError);
}

// -- tasks -------------------------------------------------------------------------

let tasks = [];
let approvals = []; // pending ones the user may answer (agentd filters)

function approvalButtons(task) {
    const out = [];
    for (const ap of approvals) {
        if (ap.task !== task.id || ap.status !== "pending")
            continue;
        const what = document.createElement("div");
        what.className = "meta approval";
        what.textContent = `${ap.tool}: ${JSON.stringify(ap.arguments)}`;
        out.push(what,
                 agentButton("Approve", () => call("Approvals", "GrantApproval", [ap.id, false])),
                 agentButton("Deny", () => call("Approvals", "DenyApproval",
                                                [ap.id, "denied from Cockpit"])));
    }
    return out;
}

function refreshApprovals() {
    return call("Approvals", "ListApprovals", [])
            .then(([text]) => {
                approvals = JSON.parse(text);
                renderBoard();
            })
            .catch(showError);
}

function renderBoard() {
    const filter = $("task-filter").value.trim().toLowerCase();
    const project = $("filter-project").value;
    const agent = $("filter-agent").value;
    const board = $("board");
    board.replaceChildren();
    for (const [key, label, statuses] of COLUMNS) {
        const column = document.createElement("div");
        column.className = "column";
        column.dataset.column = key;
        const title = document.createElement("h2");
        title.textContent = label;
        column.append(title);
        for (const t of tasks) {
            if (!statuses.includes(t.status))
                continue;
            if ((project && t.project !== project) || (agent && t.agent !== agent))
                continue;
            if (filter && !`${t.title} ${t.agent} ${t.project}`.toLowerCase().includes(filter))
                continue;
            const card = el("div", "card");
            card.dataset.task = String(t.id);
            card.addEventListener("click", () => showTask(t.id)); // task.js
            card.dataset.status = t.status;
            card.dataset.agent = t.agent;
            card.dataset.project = t.project;
            const meta = [t.status, t.agent, t.project, t.priority].filter(Boolean).join(" · ");
            card.append(el("div", "", `#${t.id} ${t.title}`), el("div", "meta", meta),
                        ...approvalButtons(t));
            column.append(card);
        }
        board.append(column);
    }
}

// A filter's choices: the values the board's tasks have (the one chosen stays).
function fillFilter(id, values) {
    const select = $(id);
    const chosen = select.value;
    const names = [...new Set(values.filter(Boolean))].sort();
    select.replaceChildren(new Option("all", ""), ...names.map(n => new Option(n, n)));
    select.value = names.includes(chosen) ? chosen : "";
}

function refreshTasks() {
    return call("Tasks", "ListTasks", [{ limit: { t: "u", v: 500 } }])
            .then(([rows]) => {
                tasks = rows.map(([id, title, status, priority, project, agent]) => (
                    { id: Number(id), title, status, priority, project, agent }));
                fillFilter("filter-project", tasks.map(t => t.project));
                fillFilter("filter-agent", tasks.map(t => t.agent));
                renderBoard();
            })
            .catch(showError);
}

function submitTask(event) {
    event.preventDefault();
    const spec = { title: { t: "s", v: $("submit-title").value.trim() } };
    const agent = $("submit-agent").value;
    const exec = $("submit-exec").value.trim();
    if (agent)
        spec.agent = { t: "s", v: agent };
    if (exec)
        spec.exec = { t: "s", v: exec };
    call("Tasks", "SubmitTask", [spec])
            .then(() => {
                $("submit-title").value = "";
                $("submit-exec").value = "";
                showError(null);
                return refreshTasks();
            })
            .catch(showError);
}

// -- goals -------------------------------------------------------------------------
// A goal's plan is a DAG of steps; shown as a tree: each step under the last of
// the steps it depends on (its other dependencies named beside it).

function stepTree(steps) {
    const byId = new Map(steps.map(s => [s.id, { ...s, children: [] }]));
    const roots = [];
    for (const s of byId.values()) {
        const parents = (s.depends_on || []).filter(d => byId.has(d));
        if (parents.length)
            byId.get(parents[parents.length - 1]).children.push(s);
        else
            roots.push(s);
    }
    const list = nodes => {
        const ul = document.createElement("ul");
        for (const s of nodes) {
            const li = document.createElement("li");
            li.className = "step";
            li.dataset.step = s.id;
            li.dataset.state = s.state;
            li.textContent = `${s.id}: ${s.title}`;
            const meta = document.createElement("span");
            meta.className = "meta";
            const after = (s.depends_on || []).length > 1 ? ` · after ${s.depends_on.join(", ")}` : "";
            meta.textContent = `${s.state}${s.task ? ` · task #${s.task}` : ""}${after}`;
            li.append(meta);
            if (s.children.length)
                li.append(list(s.children));
            ul.append(li);
        }
        return ul;
    };
    return list(roots);
}

function renderGoal(goal) {
    const box = el("div", "goal");
    box.dataset.goal = String(goal.id);
    box.dataset.state = goal.state;
    const meta = `${goal.state} · planner ${goal.planner || "-"} · round ${goal.round}` +
        (goal.error ? ` · ${goal.error}` : "");
    box.append(el("h2", "", `#${goal.id} ${goal.intent}`), el("div", "meta", meta));
    if (goal.state === "awaiting_approval") {
        box.append(agentButton("Approve plan", () => call("Goals", "ApproveGoal", [goal.id])),
                   agentButton("Reject plan", () => call("Goals", "RejectGoal",
                                                         [goal.id, "rejected from Cockpit"])));
    } else if (!goal.finished) {
        box.append(agentButton("Cancel", () => call("Goals", "CancelGoal", [goal.id])));
    }
    box.append(stepTree(goal.steps || []));
    if (goal.result) {
        const result = document.createElement("pre");
        result.textContent = typeof goal.result === "string" ? goal.result : JSON.stringify(goal.result, null, 2);
        box.append(result);
    }
    return box;
}

function refreshGoals() {
    return call("Goals", "ListGoals", [])
            .then(([text]) => Promise.all(JSON.parse(text).slice(0, 20).map(g =>
                call("Goals", "GetGoal", [g.id]).then(([one]) => JSON.parse(one)))))
            .then(goals => $("goals").replaceChildren(...goals.map(renderGoal)))
            .catch(showError);
}

function submitGoal(event) {
    event.preventDefault();
    const options = {};
    const plan = $("goal-plan").value.trim();
    if (plan)
        options.plan = { t: "s", v: plan };
    call("Goals", "SubmitGoal", [$("goal-intent").value.trim(), options])
            .then(() => {
                $("goal-intent").value = "";
                $("goal-plan").value = "";
                showError(null);
                return refreshGoals();
            })
            .catch(showError);
}

// -- chat --------------------------------------------------------------------------
// Model.Chat hands over a file descriptor, which Cockpit's D-Bus channel cannot
// carry: ChatStart and ChatRead are the same request read by long polls.

let conversation = { agent: "", messages: [] };
let chatStream = null;

function turn(cls, text) {
    const div = el("div", `turn ${cls}`, text);
    $("chat-log").append(div);
    return div;
}

function readChat(sid, answer) {
    return call("Model", "ChatRead", [sid, 15000]).then(([text]) => {
        for (const event of JSON.parse(text)) {
            if (event.event === "token") {
                answer.textContent += event.text;
            } else if (event.event === "done") {
                conversation.messages.push({ role: "assistant", content: event.text });
                turn("meta", `${event.prompt_tokens} + ${event.completion_tokens} tokens, ` +
                             `${event.finish_reason}`).dataset.done = "true";
                return null;
            } else if (event.event === "error") {
                throw { name: event.error, message: event.message };
            }
        }
        return readChat(sid, answer); // the next long poll: returns as tokens come
    });
}

function sendChat(event) {
    event.preventDefault();
    const agent = $("chat-agent").value;
    if (agent !== conversation.agent) {
        conversation = { agent, messages: [] };
        $("chat-log").replaceChildren();
    }
    const text = $("chat-message").value;
    conversation.messages.push({ role: "user", content: text });
    turn("user", text);
    const answer = turn("assistant", "");
    $("chat-message").value = "";
    $("chat-send").disabled = true;
    $("chat-stop").disabled = false;
    call("Model", "ChatStart", [agent, JSON.stringify(conversation.messages),
        { max_tokens: { t: "u", v: 512 } }])
            .then(([sid]) => {
                chatStream = sid;
                return readChat(sid, answer);
            })
            .then(() => showError(null))
            .catch(err => {
                conversation.messages.pop();
                showError(err);
            })
            .finally(() => {
                chatStream = null;
                $("chat-send").disabled = false;
                $("chat-stop").disabled = true;
            });
}

function stopChat() {
    if (chatStream !== null)
        call("Model", "ChatCancel", [chatStream]).catch(showError);
}

// -- usage -------------------------------------------------------------------------

const COLORS = ["#06c", "#3e8635", "#f0ab00", "#c9190b", "#5752d1", "#009596", "#ec7a08", "#8a8d90"];

function renderQuotas(rows) {
    const body = $("quotas").querySelector("tbody");
    body.replaceChildren();
    for (const [kind, subject, limit, used, period, resets, source] of rows) {
        const tr = document.createElement("tr");
        tr.append(cell(kind), cell(subject), cell(used), cell(limit ? limit : "unlimited"),
                  cell(period), cell(new Date(resets * 1000).toLocaleString()), cell(source));
        body.append(tr);
    }
}

function renderUsage(rows) {
    // rows: [day, agent, owner_uid, requests, prompt_tokens, completion_tokens]
    const days = new Map();
    const names = [];
    for (const [day, agent, , , prompt, completion] of rows) {
        if (!names.includes(agent))
            names.push(agent);
        const per = days.get(day) || new Map();
        per.set(agent, (per.get(agent) || 0) + Number(prompt) + Number(completion));
        days.set(day, per);
    }
    const most = Math.max(1, ...[...days.values()].map(per => [...per.values()].reduce((a, b) => a + b, 0)));
    const chart = $("usage-chart");
    chart.replaceChildren();
    const legend = document.createElement("div");
    legend.className = "legend";
    legend.style.gridColumn = "1 / span 2";
    names.forEach((name, i) => {
        const item = document.createElement("span");
        const swatch = document.createElement("i");
        swatch.style.background = COLORS[i % COLORS.length];
        item.append(swatch, name || "(knowledge)");
        legend.append(item);
    });
    chart.append(legend);
    for (const day of [...days.keys()].sort()) {
        const label = document.createElement("div");
        label.textContent = day;
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.dataset.day = day;
        for (const [agent, tokens] of days.get(day)) {
            const part = document.createElement("span");
            part.style.width = `${(100 * tokens) / most}%`;
            part.style.background = COLORS[names.indexOf(agent) % COLORS.length];
            part.title = `${agent || "(knowledge)"}: ${tokens} tokens`;
            part.dataset.agent = agent;
            part.dataset.tokens = String(tokens);
            bar.append(part);
        }
        chart.append(label, bar);
    }
}

function refreshUsage() {
    return Promise.all([
        call("Model", "ListQuotas", []),
        call("Model", "ListUsage", [14]),
        call("Model", "DescribePlan", ["", ""]).catch(() => null),
    ])
            .then(([[quotas], [usage], plan]) => {
                renderQuotas(quotas);
                renderUsage(usage);
                const mine = plan ? JSON.parse(plan[0]) : null;
                const name = mine && mine.plan ? mine.plan.name : null;
                $("plan").textContent = name ? `Your plan: ${name}` : "No quota plan";
            })
            .catch(showError);
}

// -- pages and signals ---------------------------------------------------------------

function showPage(page) {
    for (const tab of document.querySelectorAll(".tab"))
        tab.setAttribute("aria-selected", String(tab.dataset.page === page));
    $("page-agents").hidden = page !== "agents";
    $("page-tasks").hidden = page !== "tasks";
    $("page-usage").hidden = page !== "usage";
    $("page-chat").hidden = page !== "chat";
    $("page-goals").hidden = page !== "goals";
    if (page === "usage")
        refreshUsage(); // usage has no signal: read when shown
}

function subscribe() {
    const agentsChanged = () => refreshAgents();
    for (const member of ["AgentNew", "AgentRemoved", "AgentChanged"])
        client.subscribe({ interface: `${BUS}.Manager`, member }, agentsChanged);
    client.subscribe({ interface: `${BUS}.Tasks`, member: "TaskChanged" }, () => {
        refreshTasks();
        refreshAgents(); // an agent's current task and step
        refreshGoals(); // a goal's steps are tasks
        refreshTaskDetails(); // the task shown under the board (task.js)
    });
    client.subscribe({ interface: `${BUS}.Goals`, member: "GoalChanged" }, () => refreshGoals());
    for (const member of ["ApprovalRequested", "ApprovalAnswered"]) {
        client.subscribe({ interface: `${BUS}.Approvals`, member }, () => {
            refreshApprovals();
            refreshAgents();
        });
    }
}

function init() {
    for (const tab of document.querySelectorAll(".tab"))
        tab.addEventListener("click", () => showPage(tab.dataset.page));
    $("create").addEventListener("submit", createAgent);
    $("submit").addEventListener("submit", submitTask);
    $("chat").addEventListener("submit", sendChat);
    $("goal").addEventListener("submit", submitGoal);
    $("chat-stop").addEventListener("click", stopChat);
    $("task-filter").addEventListener("input", renderBoard);
    $("filter-project").addEventListener("change", renderBoard);
    $("filter-agent").addEventListener("change", renderBoard);
    $("task-close").addEventListener("click", closeTask);
    $("agent-close").addEventListener("click", closeAgent);
    subscribe();
    Promise.all([loadTemplates(), refreshAgents(), refreshTasks(), refreshApprovals(),
                 refreshGoals()])
            .then(() => document.body.setAttribute("data-loaded", "true"));
}

init();
