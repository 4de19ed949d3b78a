// The dashboard's entry point: sign-in state and a small #fragment router.
//
//   #/                       the task list
//   #/tasks/<id>[/<step>]    one task (and a selected step)
//   #/agents                 the workers

import { session, setUnauthorizedHandler } from "./api.js";
import { mountAgents } from "./views/agents.js";
import { mountLogin } from "./views/login.js";
import { mountTask } from "./views/task.js";
import { mountTasks } from "./views/tasks.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session");
let unmount = () => {};

function route(hash) {
  const path = hash.replace(/^#/, "") || "/";
  let match;
  if (path === "/" || path === "/tasks") return { name: "tasks", mount: mountTasks, params: {} };
  if (path === "/agents") return { name: "agents", mount: mountAgents, params: {} };
  if ((match = /^\/tasks\/([^/]+)(?:\/([^/]+))?$/.exec(path))) {
    const params = { taskId: decodeURIComponent(match[1]), stepId: match[2] && decodeURIComponent(match[2]) };
    return { name: "tasks", mount: mountTask, params };
  }
  return null;
}

function show(notice) {
  unmount();
  const signedIn = Boolean(session.token());
  nav.hidden = !signedIn;
  sessionBox.hidden = !signedIn;
  if (!signedIn) {
    document.title = "Sign in · AgentManager";
    unmount = mountLogin(view, { onSignedIn: () => show(), notice });
    return;
  }
  const current = route(location.hash);
  if (!current) {
    location.replace("#/");
    return;
  }
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("active", link.dataset.nav === current.name);
  }
  document.title = current.params.taskId
    ? `Task ${current.params.taskId.slice(0, 8)} · AgentManager`
    : `${current.name === "agents" ? "Agents" : "Tasks"} · AgentManager`;
  unmount = current.mount(view, current.params) || (() => {});
  window.scrollTo(0, 0);
}

function signOut(notice) {
  session.clear();
  show(notice);
}

setUnauthorizedHandler((err) => {
  if (session.token()) signOut(`Signed out: the server no longer accepts your token (${err.message}).`);
});
document.getElementById("logout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => show());
// Another tab signed in or out with a remembered token.
window.addEventListener("storage", (ev) => { if (ev.key === "am.token") show(); });
show();
