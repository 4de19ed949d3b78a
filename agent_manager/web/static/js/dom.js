// Small DOM helpers. Text always goes in as text (textContent), never as HTML; the
// only HTML the dashboard inserts is sanitized Markdown (see markdown.js).

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/"}, "text", otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function shortId(id) {
  return id && id.length > 12 ? id.slice(0, 8) : id;
}

export function pill(status, label) {
  return h("span", { class: `pill status-${status}` }, label || status);
}

export function when(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/** "12 s ago", "3 min ago", "in 40 s" — with the exact time as a tooltip. */
export function ago(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  const abs = Math.abs(seconds);
  let text;
  if (abs < 5) text = "just now";
  else if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} d`;
  if (abs >= 5) text = seconds >= 0 ? `${text} ago` : `in ${text}`;
  return h("time", { datetime: iso, title: when(iso) }, text);
}

export function duration(fromIso, toIso) {
  if (!fromIso || !toIso) return "";
  const seconds = (new Date(toIso) - new Date(fromIso)) / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function tokens(n) {
  return Number(n || 0).toLocaleString();
}

export function json(value) {
  return h("pre", { class: "code" }, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

export function progress(done, total) {
  const pct = total ? Math.round((100 * done) / total) : 0;
  return h("div", { class: "progress", title: `${done} of ${total} steps done` },
    h("div", { class: "progress-track" },
      // A width set through the CSSOM, which the page's CSP allows (inline style attributes it does not).
      (() => { const bar = h("div", { class: "progress-bar" }); bar.style.width = `${pct}%`; return bar; })()),
    h("span", { class: "progress-label" }, `${done} / ${total}`));
}

export function emptyState(...content) {
  return h("p", { class: "empty" }, ...content);
}
