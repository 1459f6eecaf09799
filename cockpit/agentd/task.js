/* A task's details under the board: what agentd says of it (DescribeTask), the
   steps its agent recorded (ListTaskSteps) and its artifacts (ListArtifacts;
   a text one is shown, any one downloaded, through ReadArtifact). Opened by a
   click on a card, kept current by TaskChanged (agentd.js calls
   refreshTaskDetails). agentd decides who may see a task, as for agentctl:
   a refusal is shown as it is. */
"use strict";

let shownTask = 0;
const TEXT_LIMIT = 300; // characters of a step's arguments or result shown on its line

function clip(value) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length > TEXT_LIMIT ? `${text.slice(0, TEXT_LIMIT)}…` : text;
}

function variant(dict, key) {
    const v = dict[key];
    return v && typeof v === "object" && "v" in v ? v.v : v;
}

function stepItem(step) {
    const item = el("li", "step");
    const seconds = step.seconds === undefined ? "" : ` · ${Number(step.seconds).toFixed(1)} s`;
    item.append(el("span", "tool", step.tool || "step"),
                el("span", "meta", `attempt ${step.attempt ?? 0}${seconds}`));
    if (step.arguments !== undefined)
        item.append(el("div", "meta", clip(step.arguments)));
    if (step.result !== undefined)
        item.append(el("div", "result", clip(step.result)));
    return item;
}

function artifactBytes(name) {
    // Cockpit's D-Bus JSON carries "ay" as base64
    return call("Tasks", "ReadArtifact", [shownTask, name])
            .then(([data]) => Uint8Array.from(atob(data), c => c.charCodeAt(0)));
}

function showArtifact(name) {
    artifactBytes(name)
            .then(data => {
                const view = $("artifact-view");
                view.textContent = new TextDecoder().decode(data);
                view.dataset.artifact = name;
                view.hidden = false;
            })
            .catch(showError);
}

function downloadArtifact(name, mime) {
    artifactBytes(name)
            .then(data => {
                const link = el("a");
                link.href = URL.createObjectURL(new Blob([data], { type: mime }));
                link.download = name;
                link.click();
                setTimeout(() => URL.revokeObjectURL(link.href), 60000);
            })
            .catch(showError);
}

function artifactRow([name, mime, _path, size]) {
    const row = el("tr");
    row.dataset.artifact = name;
    const actions = el("td");
    if (mime.startsWith("text/") || mime === "application/json") {
        const show = el("button", "", "Show");
        show.addEventListener("click", () => showArtifact(name));
        actions.append(show);
    }
    const save = el("button", "", "Download");
    save.addEventListener("click", () => downloadArtifact(name, mime));
    actions.append(save);
    row.append(cell(name), cell(mime), cell(bytes(Number(size))), actions);
    return row;
}

function renderTaskDetails(info, steps, artifacts) {
    const status = variant(info, "status");
    $("task-title").textContent = `#${shownTask} ${variant(info, "title")}`;
    const summary = [status, variant(info, "agent"), variant(info, "project")].filter(Boolean);
    $("task-summary").textContent = summary.join(" · ");
    $("task-details").dataset.status = status;
    const error = variant(info, "error");
    const result = variant(info, "result");
    $("task-result").textContent = error ? `error: ${error}` : (result ? clip(result) : "");
    $("task-steps").replaceChildren(...steps.map(stepItem));
    $("no-steps").hidden = steps.length > 0;
    $("task-artifacts").querySelector("tbody").replaceChildren(...artifacts.map(artifactRow));
    $("task-details").hidden = false;
}

function refreshTaskDetails() {
    if (!shownTask)
        return Promise.resolve();
    const id = shownTask;
    return Promise.all([call("Tasks", "DescribeTask", [id]),
                        call("Tasks", "ListTaskSteps", [id]),
                        call("Tasks", "ListArtifacts", [id])])
            .then(([[info], [steps], [artifacts]]) => {
                if (id === shownTask) // another card was opened meanwhile
                    renderTaskDetails(info, JSON.parse(steps), artifacts);
            })
            .catch(showError);
}

function showTask(id) {
    if (id !== shownTask) {
        shownTask = id;
        $("artifact-view").hidden = true;
    }
    return refreshTaskDetails();
}

function closeTask() {
    shownTask = 0;
    $("task-details").hidden = true;
}
