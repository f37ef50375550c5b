// The console's only way to the server: the REST API, with the session's token and
// `Reeve-Plane: web`, so everything done here is audited on plane web.

const KEY = 'reeve.token';

/** The token lives in this tab's sessionStorage: gone when the tab closes, never in a URL. */
export const session = {
  get token() {
    return sessionStorage.getItem(KEY);
  },
  set(token) {
    sessionStorage.setItem(KEY, token);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

/** A refusal, carrying the problem document's `detail` and `code`. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `the server answered ${status}`);
    this.status = status;
    this.code = problem && problem.code;
    this.problem = problem;
  }
}

let unauthorized = () => {};
/** What to do when the token stops working (revoked, expired). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

function headers(extra) {
  const h = { 'Reeve-Plane': 'web', ...extra };
  const token = session.token;
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function refusal(resp) {
  let problem = null;
  try {
    problem = JSON.parse(await resp.text());
  } catch {
    problem = null;
  }
  if (resp.status === 401) unauthorized();
  return new ApiError(resp.status, problem);
}

/** One request under /api/v1; the parsed JSON answer (null when empty), or an ApiError. */
export async function api(method, path, { body, ifMatch, signal } = {}) {
  const extra = {};
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (ifMatch !== undefined) extra['If-Match'] = `"${ifMatch}"`;
  let resp;
  try {
    resp = await fetch(`/api/v1${path}`, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { detail: `reeve could not be reached (${e.message})`, code: 'unreachable' });
  }
  if (!resp.ok) throw await refusal(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** A streamed answer (a job's log, the event stream), handed over chunk by chunk as text. */
export async function stream(path, { extra = {}, signal, onChunk }) {
  const resp = await fetch(`/api/v1${path}`, { headers: headers(extra), signal, cache: 'no-store' });
  if (!resp.ok) throw await refusal(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onChunk(decoder.decode(value, { stream: true }));
  }
}

/** `?a=1&b=2` from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '' && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;
