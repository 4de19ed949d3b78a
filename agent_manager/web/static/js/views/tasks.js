// The task list, newest first, refreshed every couple of seconds.

import { ApiError, api } from "../api.js";
import { ago, duration, emptyState, h, pill, progress, shortId } from "../dom.js";

const REFRESH_MS = 2000;
const PAGE = 50;
const FILTERS = [
  ["all", "All", null],
  ["active", "Active", ["planning", "running", "auditing", "synthesizing"]],
  ["completed", "Completed", ["completed"]],
  ["failed", "Failed", ["failed"]],
  ["cancelled", "Cancelled", ["cancelled"]],
];

function row(task) {
  const href = `#/tasks/${encodeURIComponent(task.id)}`;
  return h("tr", { dataset: { task: task.id }, class: "clickable", onclick: () => { location.hash = href; } },
    h("td", { class: "goal-cell" }, h("a", { href, title: task.goal }, task.goal)),
    h("td", {}, pill(task.status)),
    h("td", { class: "progress-cell" }, progress(task.steps_done, task.steps_total)),
    h("td", { class: "num" }, task.rework_round ? `↻ ${task.rework_round}` : "—"),
    h("td", {}, ago(task.created_at)),
    h("td", { class: "muted" }, task.finished_at ? duration(task.created_at, task.finished_at) : "running"),
    h("td", { class: "mono muted", title: task.id }, shortId(task.id)));
}

export function mountTasks(root) {
  const stopper = new AbortController();
  let filter = "all";
  let limit = PAGE;
  let timer = null;

  const tabs = h("div", { class: "tabs", role: "tablist" });
  const body = h("tbody");
  const banner = h("p", { class: "banner error", role: "alert", hidden: true });
  const count = h("span", { class: "muted" });
  const more = h("button", { type: "button", class: "button ghost", hidden: true }, "Show more");
  more.addEventListener("click", () => { limit += PAGE; refresh(); });

  const drawTabs = () => tabs.replaceChildren(...FILTERS.map(([key, label]) =>
    h("button", {
      type: "button", role: "tab", class: key === filter ? "tab active" : "tab",
      "aria-selected": key === filter ? "true" : "false",
      onclick: () => { filter = key; limit = PAGE; drawTabs(); refresh(); },
    }, label)));
  drawTabs();

  async function refresh() {
    clearTimeout(timer);
    try {
      const status = FILTERS.find(([key]) => key === filter)[2];
      const page = await api.tasks({ status, limit }, { signal: stopper.signal });
      banner.hidden = true;
      body.replaceChildren(...page.items.map(row));
      count.textContent = page.items.length === 1 ? "1 task" : `${page.items.length} tasks`;
      more.hidden = !page.next_cursor;
      if (!page.items.length) {
        body.replaceChildren(h("tr", {}, h("td", { colspan: 7 },
          filter === "all"
            ? emptyState("No tasks yet. Submit one with ", h("code", {}, "am submit"), " or ",
              h("code", {}, "POST /v1/tasks"), ".")
            : emptyState("No tasks with this status."))));
      }
    } catch (err) {
      if (stopper.signal.aborted) return;
      banner.textContent = err instanceof ApiError ? err.message : String(err);
      banner.hidden = false;
    }
    if (!stopper.signal.aborted) timer = setTimeout(refresh, REFRESH_MS);
  }

  root.replaceChildren(
    h("section", { class: "page" },
      h("div", { class: "page-head" },
        h("div", {}, h("h1", {}, "Tasks"), count),
        tabs),
      banner,
      h("div", { class: "card table-card" },
        h("table", { class: "table tasks-table" },
          h("thead", {}, h("tr", {},
            ["Goal", "Status", "Progress", "Rework", "Created", "Duration", "ID"].map((t) => h("th", {}, t)))),
          body)),
      h("div", { class: "more" }, more)),
  );
  refresh();
  return () => { stopper.abort(); clearTimeout(timer); };
}
