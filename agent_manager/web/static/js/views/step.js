// One step in detail: what it was asked, the locks it holds, and every attempt with
// its reasoning–acting history (thought, action, observation).

import { ago, emptyState, h, pill, tokens } from "../dom.js";
import { output } from "../markdown.js";

function field(label, ...value) {
  return h("div", { class: "field" }, h("dt", {}, label), h("dd", {}, ...value));
}

function compact(value) {
  if (value === null || value === undefined || value === "") return null;
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function turn(ta, index) {
  const input = compact(ta.action_input);
  const isAnswer = ta.action === "final_answer";
  return h("li", { class: "ra-turn" },
    h("span", { class: "ra-index" }, String(index + 1)),
    h("div", { class: "ra-body" },
      ta.thought ? h("div", { class: "ra-thought" }, h("span", { class: "ra-label" }, "Thought"), h("p", {}, ta.thought)) : null,
      h("div", { class: "ra-action" },
        h("span", { class: "ra-label" }, "Action"),
        h("code", { class: isAnswer ? "action answer" : "action" }, ta.action),
        input ? h("pre", { class: "code small" }, input) : null),
      ta.observation !== null && ta.observation !== undefined
        ? h("div", { class: "ra-observation" }, h("span", { class: "ra-label" }, "Observation"),
          h("pre", { class: "code small" }, ta.observation))
        : null));
}

function attempt(result, open, onToggle) {
  const details = h("details", { class: `attempt result-${result.status}`, open, dataset: { result: result.id } },
    h("summary", {},
      h("span", { class: "strong" }, `Attempt ${result.attempt}`),
      result.rework_round ? h("span", { class: "chip" }, `rework round ${result.rework_round}`) : null,
      pill(result.status),
      h("span", { class: "muted" }, result.outcome.replace("_", " ")),
      h("span", { class: "spacer" }),
      result.agent_id ? h("span", { class: "mono muted" }, result.agent_id) : null,
      h("span", { class: "muted" }, `${tokens(result.usage.total_tokens)} tok`),
      ago(result.created_at)),
    result.error ? h("div", { class: "callout error" }, h("strong", {}, "Error "), result.error) : null,
    h("h4", {}, "Reasoning–acting history"),
    result.ra_history.length
      ? h("ol", { class: "ra" }, result.ra_history.map(turn))
      : h("p", { class: "muted" }, "No RA history was reported for this attempt."),
    h("h4", {}, "Output"),
    output(result.output));
  details.addEventListener("toggle", () => onToggle(result.id, details.open));
  return details;
}

function locks(step) {
  if (!step.locks.length) return h("span", { class: "muted" }, "none held");
  return h("table", { class: "table compact" },
    h("thead", {}, h("tr", {}, ["Path", "Mode", "Agent", "Expires"].map((t) => h("th", {}, t)))),
    h("tbody", {}, step.locks.map((lock) => h("tr", { class: "lock" },
      h("td", { class: "mono" }, lock.path),
      h("td", {}, h("span", { class: `chip mode-${lock.mode}` }, lock.mode)),
      h("td", { class: "mono" }, lock.agent_id || "—"),
      h("td", {}, ago(lock.expires_at))))));
}

export class StepPanel {
  /** Shows one step in `root`; `onSelect(id)` when a dependency is clicked. */
  constructor(root, { onSelect }) {
    this.root = root;
    this.onSelect = onSelect;
    this.shown = "";
    this.open = new Map(); // result id -> whether its <details> is open
  }

  show(task, stepId) {
    const step = task.steps.find((st) => st.id === stepId);
    const key = JSON.stringify([stepId, step]);
    if (key === this.shown) return; // unchanged: keep the reader's place
    this.shown = key;
    if (!step) {
      this.root.replaceChildren(
        h("div", { class: "card-head" }, h("h2", {}, "Step")),
        emptyState(stepId ? `No step '${stepId}' in this task.` : "Click a step in the graph to see its instruction, locks, attempts and reasoning–acting history."));
      return;
    }
    const attempts = step.attempts.length ? step.attempts : step.result ? [step.result] : [];
    const latest = attempts.at(-1);
    const parts = [
      h("div", { class: "card-head" },
        h("h2", {}, h("span", { class: "mono" }, step.id)),
        pill(step.status),
        h("span", { class: "muted" }, step.role),
        h("span", { class: "spacer" }),
        h("span", { class: "muted" }, `attempt ${step.attempt} of ${step.max_attempts}`),
        step.agent_id ? h("span", { class: "mono muted", title: "agent" }, step.agent_id) : null),
      h("dl", { class: "fields" },
        step.status === "claimed" ? field("Lease ends", ago(step.lease_expires_at)) : null,
        field("Depends on", step.depends_on.length
          ? step.depends_on.map((d) => h("button", { type: "button", class: "chip mono link", onclick: () => this.onSelect(d) }, d))
          : h("span", { class: "muted" }, "nothing")),
        field("Files", step.files.length
          ? step.files.map((f) => h("span", { class: "chip mono" }, `${f.path} · ${f.mode}`))
          : h("span", { class: "muted" }, "none declared")),
        field("Locks", locks(step))),
      step.instruction ? h("div", { class: "instruction" }, h("h4", {}, "Instruction"), h("p", {}, step.instruction)) : null,
      step.rework_notes.length
        ? h("div", { class: "callout warn" }, h("strong", {}, "Rework notes"),
          h("ul", {}, step.rework_notes.map((n) => h("li", {}, n))))
        : null,
      step.last_error ? h("div", { class: "callout error" }, h("strong", {}, "Last error "), step.last_error) : null,
      h("h3", {}, `Attempts (${attempts.length})`),
      attempts.length
        ? h("div", { class: "attempts" }, [...attempts].reverse().map((r) =>
          attempt(r, this.open.get(r.id) ?? r === latest, (id, isOpen) => this.open.set(id, isOpen))))
        : emptyState("No attempt has reported yet."),
    ];
    this.root.replaceChildren(...parts.filter(Boolean));
  }
}
