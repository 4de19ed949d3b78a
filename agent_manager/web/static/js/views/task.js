// One task: its header, the live step graph, the selected step, the final answer,
// the audits and the event log. The task is re-read (at most every few hundred ms)
// whenever its event stream says something changed.

import { ApiError, api } from "../api.js";
import { ago, duration, h, pill, progress, tokens } from "../dom.js";
import { followEvents } from "../events.js";
import { StepGraph } from "../graph.js";
import { Activity, audits, finalAnswer } from "./outcome.js";
import { StepPanel } from "./step.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);
const REFRESH_DELAY_MS = 150;
const LIVE_LABELS = {
  connecting: "connecting…",
  live: "live",
  polling: "live (polling)",
  reconnecting: "reconnecting…",
  ended: "final",
};
const LEGEND = ["pending", "ready", "claimed", "done", "failed", "cancelled"];

function header(task) {
  const work = task.steps.filter((st) => !st.id.startsWith("_"));
  const done = work.filter((st) => st.status === "done").length;
  return [
    h("div", { class: "task-title" },
      h("h1", { title: task.goal }, task.goal),
      h("div", { class: "meta" },
        pill(task.status),
        h("span", { class: "mono", title: "task id" }, task.id),
        h("span", {}, "created ", ago(task.created_at)),
        task.finished_at ? h("span", {}, "took ", duration(task.created_at, task.finished_at)) : null,
        task.options.audit || task.rework_round
          ? h("span", {}, `rework round ${task.rework_round} of ${task.options.max_rework_rounds}`)
          : null,
        h("span", {}, `${tokens(task.usage.total_tokens)} tokens`))),
    progress(done, work.length),
  ];
}

export function mountTask(root, { taskId, stepId }) {
  const stopper = new AbortController();
  let task = null;
  let selected = stepId || null;
  let timer = null;
  let reading = null;
  let again = false;
  let lastHeader = "";
  let lastOutcome = "";

  const live = h("span", { class: "live", dataset: { state: "connecting" } }, LIVE_LABELS.connecting);
  const head = h("div", { class: "task-head-body" });
  const banner = h("p", { class: "banner error", role: "alert", hidden: true });
  const graphBox = h("div", { class: "graph-scroll" });
  const stepCard = h("section", { class: "card step-panel", id: "step-panel" });
  const answerBody = h("div", { id: "final-answer" });
  const auditBody = h("div", { id: "audits" });
  const activityBody = h("div", { id: "activity" });

  const select = (id) => {
    selected = id;
    graph.select(id);
    const hash = `#/tasks/${encodeURIComponent(taskId)}/${encodeURIComponent(id)}`;
    history.replaceState(null, "", hash); // no hashchange: the page stays mounted
    if (task) panel.show(task, id);
  };
  const graph = new StepGraph(graphBox, { onSelect: select });
  const panel = new StepPanel(stepCard, { onSelect: select });
  const activity = new Activity(activityBody);

  function render() {
    const headKey = JSON.stringify([task.status, task.goal, task.rework_round, task.usage, task.finished_at,
      task.steps.map((st) => st.status)]);
    if (headKey !== lastHeader) {
      lastHeader = headKey;
      head.replaceChildren(...header(task));
    }
    graph.update(task);
    graph.select(selected);
    panel.show(task, selected);
    const outcomeKey = JSON.stringify([task.status, task.final_result, task.error, task.audits]);
    if (outcomeKey !== lastOutcome) {
      lastOutcome = outcomeKey;
      answerBody.replaceChildren(finalAnswer(task));
      auditBody.replaceChildren(audits(task, select));
    }
  }

  async function read() {
    try {
      task = await api.task(taskId, { signal: stopper.signal });
      banner.hidden = true;
      render();
    } catch (err) {
      if (stopper.signal.aborted) return;
      banner.textContent = err instanceof ApiError && err.status === 404
        ? `There is no task '${taskId}'.`
        : `Could not load the task: ${err.message}`;
      banner.hidden = false;
    }
  }

  /** Re-read the task. Calls that come during a read fold into one more read, and
   * every caller's promise settles only once the task read covers its call. */
  function refresh() {
    if (reading) {
      again = true;
      return reading;
    }
    reading = (async () => {
      do {
        again = false;
        await read();
      } while (again && !stopper.signal.aborted);
      reading = null;
    })();
    return reading;
  }

  const soon = () => {
    if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, REFRESH_DELAY_MS);
  };

  let pending = [];
  const follower = followEvents(taskId, {
    onEvent: (event) => {
      pending.push(event);
      if (pending.length === 1) {
        queueMicrotask(() => { activity.add(pending); pending = []; });
      }
      soon();
    },
    onState: (state) => {
      live.dataset.state = state;
      live.textContent = LIVE_LABELS[state] || state;
      if (state === "live" && !banner.hidden) soon(); // back after a failed read
    },
    isFinal: () => Boolean(task && FINAL.has(task.status)),
    settled: async () => {
      clearTimeout(timer);
      timer = null;
      await refresh();
      return Boolean(task && FINAL.has(task.status));
    },
  });

  root.replaceChildren(
    h("section", { class: "page task-page", dataset: { task: taskId } },
      h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "Tasks"), h("span", {}, "/"),
        h("span", { class: "mono" }, taskId)),
      banner,
      h("header", { class: "card task-head" }, head),
      h("section", { class: "card graph-card" },
        h("div", { class: "card-head" },
          h("h2", {}, "Step graph"),
          h("div", { class: "legend" }, LEGEND.map((st) =>
            h("span", { class: `legend-item status-${st}` }, h("i"), st)),
          h("span", { class: "legend-item system" }, h("i"), "system step")),
          h("span", { class: "spacer" }),
          live),
        graphBox),
      h("div", { class: "task-grid" },
        stepCard,
        h("div", { class: "side" },
          h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Final answer")), answerBody),
          h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Audits")), auditBody),
          h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Activity")), activityBody)))),
  );
  panel.show({ steps: [] }, null);
  refresh();
  return () => {
    stopper.abort();
    follower.stop();
    clearTimeout(timer);
  };
}
