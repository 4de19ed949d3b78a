// Known workers: their roles, when they last spoke, the steps they hold now.

import { ApiError, api } from "../api.js";
import { ago, emptyState, h, shortId } from "../dom.js";

const REFRESH_MS = 3000;
const ACTIVE_SECONDS = 90;

function row(agent) {
  const seconds = (Date.now() - new Date(agent.last_seen_at).getTime()) / 1000;
  const active = seconds < ACTIVE_SECONDS;
  return h("tr", { dataset: { agent: agent.id } },
    h("td", {},
      h("span", { class: active ? "dot live" : "dot idle", title: active ? "seen recently" : "quiet" }),
      h("span", { class: "mono strong" }, agent.id)),
    h("td", {}, agent.roles.map((r) => h("span", { class: "chip" }, r))),
    h("td", {}, agent.current_steps.length
      ? agent.current_steps.map((st) => h("a", {
        class: "chip mono link",
        href: `#/tasks/${encodeURIComponent(st.task_id)}/${encodeURIComponent(st.step_id)}`,
        title: `task ${st.task_id}, step ${st.step_id} (${st.role})`,
      }, `${shortId(st.task_id)} / ${st.step_id}`))
      : h("span", { class: "muted" }, "idle")),
    h("td", {}, ago(agent.last_seen_at)),
    h("td", {}, ago(agent.first_seen_at)));
}

export function mountAgents(root) {
  const stopper = new AbortController();
  let timer = null;
  const body = h("tbody");
  const banner = h("p", { class: "banner error", role: "alert", hidden: true });
  const count = h("span", { class: "muted" });

  async function refresh() {
    try {
      const agents = await api.agents({ signal: stopper.signal });
      banner.hidden = true;
      count.textContent = agents.length === 1 ? "1 worker" : `${agents.length} workers`;
      body.replaceChildren(...(agents.length
        ? agents.map(row)
        : [h("tr", {}, h("td", { colspan: 5 }, emptyState("No worker has claimed a step yet.")))]));
    } catch (err) {
      if (stopper.signal.aborted) return;
      banner.textContent = err instanceof ApiError ? err.message : String(err);
      banner.hidden = false;
    }
    if (!stopper.signal.aborted) timer = setTimeout(refresh, REFRESH_MS);
  }

  root.replaceChildren(
    h("section", { class: "page" },
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Agents"), count)),
      banner,
      h("div", { class: "card table-card" },
        h("table", { class: "table agents-table" },
          h("thead", {}, h("tr", {},
            ["Agent", "Roles", "Holding", "Last seen", "First seen"].map((t) => h("th", {}, t)))),
          body))),
  );
  refresh();
  return () => { stopper.abort(); clearTimeout(timer); };
}
