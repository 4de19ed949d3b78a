// The step graph: a layered left-to-right drawing of a task's steps in SVG.
//
// Work steps sit in columns by dependency depth (the longest path from a root). The
// system steps frame them: `_plan` first, the audits (`_audit-1`, `_audit-2`, …) and
// `_synthesis` after the last work column, joined to the work by dashed "phase" edges.

import { s } from "./dom.js";

const NODE_W = 160;
const NODE_H = 54;
const GAP_X = 44;
const GAP_Y = 18;
const PAD = 16;
const ID_CHARS = 17; // what fits on a node in the monospace font
const MIN_SCALE = 0.75; // a wider graph scrolls instead of shrinking further

const ROLE_ORDER = { planner: 0, auditor: 2, synthesizer: 3 };

function isSystem(step) {
  return step.id.startsWith("_");
}

function phaseOf(step) {
  if (!isSystem(step)) return 1;
  return ROLE_ORDER[step.role] ?? 2;
}

function auditNumber(id) {
  const match = /^_audit-(\d+)$/.exec(id);
  return match ? Number(match[1]) : 0;
}

/** Columns, positions and edges for `steps` (a TaskPublic's steps). Pure. */
export function layout(steps) {
  const work = steps.filter((st) => !isSystem(st));
  const byId = new Map(work.map((st) => [st.id, st]));
  const depth = new Map();
  const depthOf = (st) => {
    if (!depth.has(st.id)) {
      depth.set(st.id, 0); // plans are acyclic; this only guards against surprises
      const deps = st.depends_on.filter((d) => byId.has(d)).map((d) => depthOf(byId.get(d)) + 1);
      depth.set(st.id, Math.max(0, ...deps));
    }
    return depth.get(st.id);
  };
  work.forEach(depthOf);

  const before = steps.filter((st) => phaseOf(st) === 0);
  const after = steps
    .filter((st) => phaseOf(st) > 1)
    .sort((a, b) => phaseOf(a) - phaseOf(b) || auditNumber(a.id) - auditNumber(b.id));
  const workStart = before.length ? 1 : 0;
  const workColumns = work.length ? Math.max(...depth.values()) + 1 : 0;

  const column = new Map();
  before.forEach((st) => column.set(st.id, 0));
  work.forEach((st) => column.set(st.id, workStart + depth.get(st.id)));
  after.forEach((st, i) => column.set(st.id, workStart + workColumns + i));

  const edges = [];
  for (const st of work) {
    for (const dep of st.depends_on) if (byId.has(dep)) edges.push({ from: dep, to: st.id, phase: false });
  }
  const hasDependents = new Set(edges.map((e) => e.from));
  const roots = work.filter((st) => !st.depends_on.some((d) => byId.has(d)));
  const sinks = work.filter((st) => !hasDependents.has(st.id));
  for (const b of before) {
    const targets = roots.length ? roots : after.slice(0, 1);
    for (const t of targets) edges.push({ from: b.id, to: t.id, phase: true });
  }
  if (after.length) {
    for (const sink of sinks) edges.push({ from: sink.id, to: after[0].id, phase: true });
    for (let i = 1; i < after.length; i++) edges.push({ from: after[i - 1].id, to: after[i].id, phase: true });
  }

  // Order each column by the mean row of its nodes' predecessors (fewer crossings),
  // keeping the plan's order among equals.
  const columns = [];
  steps.forEach((st, index) => {
    const c = column.get(st.id);
    (columns[c] ||= []).push({ st, index });
  });
  const preds = new Map();
  for (const e of edges) (preds.get(e.to) || preds.set(e.to, []).get(e.to)).push(e.from);
  const row = new Map();
  for (const col of columns) {
    if (!col) continue;
    const key = ({ st, index }) => {
      const rows = (preds.get(st.id) || []).filter((p) => row.has(p)).map((p) => row.get(p));
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : index;
    };
    col.sort((a, b) => key(a) - key(b) || a.index - b.index);
    col.forEach(({ st }, r) => row.set(st.id, r - (col.length - 1) / 2));
  }

  const tallest = Math.max(1, ...columns.filter(Boolean).map((c) => c.length));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const width = PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * GAP_X;
  const nodes = new Map();
  for (const st of steps) {
    nodes.set(st.id, {
      x: PAD + column.get(st.id) * (NODE_W + GAP_X),
      y: height / 2 + row.get(st.id) * (NODE_H + GAP_Y) - NODE_H / 2,
    });
  }
  return { nodes, edges, width, height };
}

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function edgePath(a, b) {
  const x1 = a.x + NODE_W;
  const y1 = a.y + NODE_H / 2;
  const x2 = b.x - 3;
  const y2 = b.y + NODE_H / 2;
  const dx = Math.max(24, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

/** What the node says under its id, and its badge (audit verdict or rework round). */
function describe(step, audits) {
  const status = step.status;
  let meta = `${step.role} · ${status}`;
  if (step.attempt > 1 && status !== "done") meta += ` · try ${step.attempt}`;
  let badge = "";
  let verdict = "";
  const n = auditNumber(step.id);
  const audit = n ? audits.find((a) => a.round === n - 1) : null;
  if (audit && status === "done") {
    verdict = audit.report.passed ? "passed" : "failed";
    meta = `audit ${verdict} · ${Math.round(audit.report.score * 100)}%`;
  }
  const round = step.result?.rework_round || 0;
  if (!isSystem(step) && (round > 0 || step.rework_notes.length)) badge = `↻${Math.max(round, 1)}`;
  return { meta, badge, verdict };
}

export class StepGraph {
  /** Draws into `container`; `onSelect(stepId)` when a node is clicked. */
  constructor(container, { onSelect }) {
    this.container = container;
    this.onSelect = onSelect;
    this.shape = "";
    this.elements = new Map();
    this.selected = null;
  }

  update(task) {
    const plan = layout(task.steps);
    const shape = JSON.stringify([...plan.nodes].concat(plan.edges));
    if (shape !== this.shape) this.draw(task, plan);
    this.shape = shape;
    const byId = new Map(task.steps.map((st) => [st.id, st]));
    for (const [id, el] of this.elements) {
      const step = byId.get(id);
      const { meta, badge, verdict } = describe(step, task.audits);
      el.node.setAttribute("class", this.classes(step, verdict));
      el.node.dataset.status = step.status;
      el.node.setAttribute("aria-label", `${step.id}: ${step.role}, ${step.status}`);
      el.meta.textContent = meta;
      el.badge.textContent = badge;
      el.badge.setAttribute("visibility", badge ? "visible" : "hidden");
      el.badgeBox.setAttribute("visibility", badge ? "visible" : "hidden");
      el.title.textContent = `${step.id} (${step.role}, ${step.status})${step.instruction ? `\n${step.instruction}` : ""}`;
    }
    for (const e of this.edgeEls) {
      e.el.classList.toggle("edge-done", byId.get(e.from)?.status === "done");
    }
  }

  select(stepId) {
    this.selected = stepId;
    for (const [id, el] of this.elements) el.node.classList.toggle("selected", id === stepId);
  }

  classes(step, verdict) {
    const list = ["node", `status-${step.status}`];
    if (isSystem(step)) list.push("system", `role-${step.role}`);
    if (verdict) list.push(`verdict-${verdict}`);
    if (step.id === this.selected) list.push("selected");
    return list.join(" ");
  }

  draw(task, plan) {
    const svg = s("svg", {
      class: "graph",
      viewBox: `0 0 ${plan.width} ${plan.height}`,
      width: plan.width,
      height: plan.height,
      role: "group",
      "aria-label": "step graph",
    });
    svg.style.minWidth = `${Math.round(plan.width * MIN_SCALE)}px`;
    svg.append(
      s("defs", {},
        s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
          s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" })),
        // The status stripe is cut to the node's rounded corners.
        s("clipPath", { id: "node-clip" }, s("rect", { width: NODE_W, height: NODE_H, rx: 9 }))),
    );
    const edgeLayer = s("g", { class: "edges" });
    this.edgeEls = plan.edges.map((e) => {
      const el = s("path", {
        class: e.phase ? "edge phase" : "edge",
        d: edgePath(plan.nodes.get(e.from), plan.nodes.get(e.to)),
        "marker-end": "url(#arrow)",
      });
      edgeLayer.append(el);
      return { ...e, el };
    });
    const nodeLayer = s("g", { class: "nodes" });
    this.elements = new Map();
    for (const step of task.steps) {
      const { x, y } = plan.nodes.get(step.id);
      const title = s("title");
      const meta = s("text", { class: "node-meta", x: 16, y: 38 });
      const badgeBox = s("rect", { class: "node-badge-box", x: NODE_W - 34, y: 7, width: 26, height: 16, rx: 8 });
      const badge = s("text", { class: "node-badge", x: NODE_W - 21, y: 19, "text-anchor": "middle" });
      const node = s("g", {
        transform: `translate(${x},${y})`,
        tabindex: 0,
        role: "button",
        dataset: { step: step.id },
        onclick: () => this.onSelect(step.id),
        onkeydown: (ev) => {
          if (ev.key === "Enter" || ev.key === " ") {
            ev.preventDefault();
            this.onSelect(step.id);
          }
        },
      },
      title,
      s("rect", { class: "node-box", width: NODE_W, height: NODE_H, rx: 9 }),
      s("rect", { class: "node-stripe", x: 0, y: 0, width: 6, height: NODE_H, "clip-path": "url(#node-clip)" }),
      s("text", { class: "node-id", x: 16, y: 21 }, clip(step.id, ID_CHARS)),
      meta, badgeBox, badge);
      nodeLayer.append(node);
      this.elements.set(step.id, { node, meta, badge, badgeBox, title });
    }
    svg.append(edgeLayer, nodeLayer);
    this.container.replaceChildren(svg);
  }
}
