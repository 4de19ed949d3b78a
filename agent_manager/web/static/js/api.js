// The /v1 API as the dashboard uses it: the signed-in token, JSON calls, errors.

const KEY = "am.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0: the server could not be reached
    this.code = code;
  }
}

export const session = {
  /** The token: this tab's (sessionStorage), or a remembered one (localStorage). */
  token() {
    return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
  },
  save(token, remember) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(KEY, token);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  },
};

let onUnauthorized = () => {};

/** What to do when the server refuses the stored token (sign the user out). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export function authHeaders(token = session.token()) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page, say
  }
  const message = body.message || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, body.code || "http_error", message);
}

/** Turn a refused request into an ApiError; a refused token also signs the user out. */
export async function check(response, { signOutOn401 = true } = {}) {
  if (response.ok) return response;
  const error = await errorOf(response);
  if (response.status === 401 && signOutOn401) onUnauthorized(error);
  throw error;
}

export async function request(path, { token, signal, headers = {}, signOutOn401 = true } = {}) {
  let response;
  try {
    response = await fetch(path, {
      headers: { Accept: "application/json", ...authHeaders(token), ...headers },
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "unreachable", "The server cannot be reached.");
  }
  return check(response, { signOutOn401 });
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export const api = {
  tasks: ({ status, limit = 50 } = {}, options) => {
    const q = new URLSearchParams({ limit: String(limit) });
    if (status) for (const s of status) q.append("status", s);
    return getJson(`/v1/tasks?${q}`, options);
  },
  task: (id, options) => getJson(`/v1/tasks/${encodeURIComponent(id)}?history=true`, options),
  events: (id, after, options) =>
    getJson(`/v1/tasks/${encodeURIComponent(id)}/events?after=${after}`, options),
  agents: (options) => getJson("/v1/agents", options),
};
