// Markdown from agents, rendered with marked and sanitized with DOMPurify before it
// touches the page (agents' output is untrusted: it may echo anything it read).

import { marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.esm.js";
import { h, json } from "./dom.js";

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** A <div class="markdown"> holding `text` rendered and sanitized. */
export function markdown(text) {
  const html = marked.parse(String(text ?? ""), { async: false, gfm: true });
  const fragment = DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
    FORBID_ATTR: ["style"],
    RETURN_DOM_FRAGMENT: true,
  });
  return h("div", { class: "markdown" }, fragment);
}

/** A step's output: Markdown when it is text, pretty JSON otherwise. */
export function output(value) {
  if (value === null || value === undefined) return h("p", { class: "muted" }, "no output");
  return typeof value === "string" ? markdown(value) : json(value);
}
