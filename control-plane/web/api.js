// The REST API, called with the token the user typed. The token lives in
// sessionStorage only (this tab, until it closes or the user logs out) and
// travels in the Authorization header, never in a cookie: a request from
// another site carries nothing, so there is nothing to forge.

const KEY = "isame.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** The token was refused (401): the user must sign in again. */
export class Unauthorized extends Error {}

/** Any other answer than 2xx, with the server's message. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/**
 * Calls `/api/v1${path}` and returns the parsed JSON answer.
 * `as` overrides the stored token (to try one before keeping it).
 */
export async function api(path, { method = "GET", body, headers = {}, as } = {}) {
  const t = as ?? token();
  const init = {
    method,
    headers: { Accept: "application/json", ...headers },
    cache: "no-store",
    credentials: "omit",
  };
  if (t) init.headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`/api/v1${path}`, init);
  let data = null;
  if (res.headers.get("content-type")?.includes("json")) {
    data = await res.json().catch(() => null);
  }
  if (res.status === 401) throw new Unauthorized(data?.error ?? "a valid token is required");
  if (!res.ok) {
    const detail = data?.errors?.map((e) => `${e.path}: ${e.message}`).join("; ");
    const message = [data?.error ?? `HTTP ${res.status}`, detail].filter(Boolean).join(": ");
    throw new ApiError(res.status, message, data);
  }
  return data;
}
