// Sign in with an API token: any token with the `read` scope (or `admin`) will do.

import { ApiError, api, session } from "../api.js";
import { h } from "../dom.js";

function explain(err) {
  if (!(err instanceof ApiError)) return `Signing in failed: ${err.message}`;
  if (err.status === 401) return `The server refused this token: ${err.message}`;
  if (err.status === 403) return "This token is valid but lacks the read scope the dashboard needs.";
  if (err.status === 0) return "The server cannot be reached. Is it running?";
  return `Signing in failed: ${err.message}`;
}

/** Mount the sign-in form; `onSignedIn()` once a token is accepted. */
export function mountLogin(root, { onSignedIn, notice }) {
  const input = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false",
    placeholder: "am_…", required: true,
  });
  const remember = h("input", { id: "remember", type: "checkbox" });
  const message = h("p", { class: "form-error", id: "login-error", role: "alert", hidden: !notice }, notice || "");
  const submit = h("button", { type: "submit", class: "button primary" }, "Sign in");

  const form = h("form", { class: "login-form", novalidate: true },
    h("label", { for: "token" }, "API token"),
    input,
    h("label", { class: "check" }, remember, "Keep me signed in on this device"),
    message,
    submit);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) {
      message.textContent = "Paste a token first.";
      message.hidden = false;
      return;
    }
    submit.disabled = true;
    submit.textContent = "Checking…";
    try {
      await api.tasks({ limit: 1 }, { token, signOutOn401: false });
      session.save(token, remember.checked);
      onSignedIn();
    } catch (err) {
      message.textContent = explain(err);
      message.hidden = false;
      input.select();
    } finally {
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });

  root.replaceChildren(
    h("section", { class: "login card" },
      h("h1", {}, "Sign in"),
      h("p", { class: "muted" },
        "Use an API token with the ", h("code", {}, "read"), " scope. Create one on the server with ",
        h("code", {}, "am token create --scope read"), "."),
      form),
  );
  input.focus();
  return () => {};
}
