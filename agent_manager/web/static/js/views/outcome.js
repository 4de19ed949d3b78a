// What a task came to: the final answer, the audit reports of each round, and the
// event log as it happens.

import { emptyState, h } from "../dom.js";
import { markdown, output } from "../markdown.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);

function unresolvedText(item) {
  if (typeof item === "string") return item;
  if (item && typeof item === "object") {
    return item.step_id ? `${item.step_id}: ${item.problem || ""}` : item.problem || JSON.stringify(item);
  }
  return String(item);
}

/** The final answer's card body. */
export function finalAnswer(task) {
  const parts = [];
  if (task.status === "failed" && task.error) {
    parts.push(h("div", { class: "callout error" }, h("strong", {}, "The task failed. "), task.error));
  }
  const result = task.final_result;
  const answer = result && typeof result === "object" && "answer" in result ? result.answer : result;
  if (answer === null || answer === undefined) {
    if (!FINAL.has(task.status)) parts.push(emptyState("The final answer appears here when the task completes."));
    else if (!parts.length) parts.push(emptyState("This task ended without an answer."));
  } else if (typeof answer === "string") {
    parts.push(markdown(answer));
  } else if (answer && typeof answer === "object" && answer.outputs && typeof answer.outputs === "object") {
    // Without synthesis the answer is the outputs of the plan's last steps.
    for (const [stepId, value] of Object.entries(answer.outputs)) {
      parts.push(h("div", { class: "sink" }, h("h4", { class: "mono" }, stepId), output(value)));
    }
  } else {
    parts.push(output(answer));
  }
  const unresolved = (result && Array.isArray(result.unresolved) && result.unresolved) || [];
  if (unresolved.length && FINAL.has(task.status)) {
    parts.push(h("div", { class: "callout warn" },
      h("strong", {}, "Unresolved after the last audit"),
      h("ul", {}, unresolved.map((u) => h("li", {}, unresolvedText(u))))));
  }
  return h("div", { class: "answer" }, parts);
}

/** Every audit round: verdict, score, summary, and the findings sent back for rework. */
export function audits(task, onSelect) {
  if (!task.audits.length) {
    return emptyState(task.options.audit === false
      ? "This task is not audited."
      : "No audit yet: it runs when every work step is done.");
  }
  return h("ol", { class: "audits" }, task.audits.map((audit) => {
    const report = audit.report;
    const verdict = report.passed ? "passed" : "failed";
    return h("li", { class: `audit verdict-${verdict}`, dataset: { round: audit.round } },
      h("div", { class: "audit-head" },
        h("span", { class: "strong" }, `Audit ${audit.round + 1}`),
        h("span", { class: `pill verdict-${verdict}` }, verdict),
        h("span", { class: "score", title: "score" }, `${Math.round(report.score * 100)}%`)),
      h("p", {}, report.summary),
      report.findings.length
        ? h("ul", { class: "findings" }, report.findings.map((f) => h("li", {},
          h("button", { type: "button", class: "chip mono link", onclick: () => onSelect(f.step_id) }, f.step_id),
          h("span", {}, f.problem),
          f.rework_suggestions.length
            ? h("ul", { class: "suggestions" }, f.rework_suggestions.map((sug) => h("li", {}, sug)))
            : null)))
        : null);
  }));
}

function eventSummary(event) {
  const d = event.data || {};
  const bits = [];
  if (d.role) bits.push(d.role);
  if (d.attempt) bits.push(`attempt ${d.attempt}`);
  if (d.agent_id) bits.push(d.agent_id);
  if ("passed" in d) bits.push(d.passed ? "passed" : "failed");
  if (typeof d.score === "number") bits.push(`${Math.round(d.score * 100)}%`);
  if (Array.isArray(d.flagged) && d.flagged.length) bits.push(`rework: ${d.flagged.join(", ")}`);
  if (d.path) bits.push(`${d.path} (${d.mode})`);
  if (d.reason) bits.push(d.reason);
  return bits.join(" · ");
}

/** The event log, newest first; add() events as they arrive. */
export class Activity {
  constructor(root, limit = 200) {
    this.root = root;
    this.limit = limit;
    this.list = h("ol", { class: "activity" });
    this.count = 0;
    root.replaceChildren(emptyState("Waiting for events…"));
  }

  add(events) {
    if (!events.length) return;
    if (!this.count) this.root.replaceChildren(this.list);
    this.count += events.length;
    const rows = events.map((event) => {
      const kind = event.type.split(".")[0];
      return h("li", { class: `event kind-${kind}`, dataset: { type: event.type } },
        h("time", { datetime: event.created_at, title: new Date(event.created_at).toLocaleString() },
          new Date(event.created_at).toLocaleTimeString()),
        h("span", { class: "event-type" }, event.type),
        event.step_id ? h("span", { class: "mono" }, event.step_id) : null,
        h("span", { class: "muted" }, eventSummary(event)));
    });
    this.list.prepend(...rows.reverse());
    while (this.list.childElementCount > this.limit) this.list.lastElementChild.remove();
  }
}
