// The gateway's REST API from the browser: bearer token from
// sessionStorage, JSON in and out, NDJSON server streams.

const TOKEN_KEY = 'opsuite.token';

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY) || '',
  save: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// ApiError is a failed call: HTTP status and the server's message.
export class ApiError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

// grpc-gateway's HTTP status for a gRPC code, for errors inside a stream.
const HTTP_OF_GRPC = {1: 499, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400, 12: 501, 14: 503, 16: 401};

let unauthorized = () => {};
// onUnauthorized sets what happens when the token is refused (401).
export function onUnauthorized(fn) { unauthorized = fn; }

function headers(json) {
  const hd = {Accept: 'application/json', Authorization: `Bearer ${session.token()}`};
  if (json) hd['Content-Type'] = 'application/json';
  return hd;
}

async function failure(resp) {
  const text = await resp.text().catch(() => '');
  let message = text;
  try { message = JSON.parse(text).message || text; } catch { /* not JSON */ }
  const err = new ApiError(resp.status, message || resp.statusText);
  if (resp.status === 401) unauthorized(err);
  return err;
}

// query builds a query string from an object; arrays repeat the key and
// empty values are left out.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item !== undefined && item !== null && item !== '') q.append(k, String(item));
    }
  }
  const str = q.toString();
  return str ? `?${str}` : '';
}

// api calls one REST route and returns its decoded JSON.
export async function api(path, {method = 'GET', body, signal} = {}) {
  const resp = await fetch(path, {
    method, signal, cache: 'no-store', credentials: 'omit',
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!resp.ok) throw await failure(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

// stream reads a server stream (NDJSON, one {"result": …} a line) and calls
// onResult for each message until the stream ends or signal aborts.
export async function stream(path, onResult, {signal} = {}) {
  const resp = await fetch(path, {signal, cache: 'no-store', credentials: 'omit', headers: headers(false)});
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        if (msg.error) throw new ApiError(HTTP_OF_GRPC[msg.error.code] || 500, msg.error.message);
        if (msg.result) onResult(msg.result);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// role order: a higher role can do everything a lower one can.
const ROLE_RANK = {ROLE_VIEWER: 1, ROLE_OPERATOR: 2, ROLE_ADMIN: 3};
export function atLeast(role, want) { return (ROLE_RANK[role] || 0) >= (ROLE_RANK[want] || 99); }
