// fetch wrapper for the Talas JSON API (/api/v1).
// - adds X-CSRF-Token on unsafe methods (token from sign-in or GET /me)
// - turns the {"error": {"code", "message"}} format into ApiError
// - on 403 "csrf" refreshes the token once and retries
// - on 401 "unauthenticated" calls the hook installed with onAuthLost()

const BASE = '/api/v1';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

let csrfToken = null;
let authLost = null;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

export function setCsrf(token) { csrfToken = token || null; }

/** Install a callback for "the session is gone" (401 unauthenticated). */
export function onAuthLost(fn) { authLost = fn; }

function buildUrl(path, query) {
  const url = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== '') url.searchParams.set(k, String(v));
  }
  return url.pathname + url.search;
}

async function parse(res) {
  if (res.status === 204) return null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try { return await res.json(); } catch { return null; }
  }
  return null;
}

/**
 * api('GET', '/feed', {query: {limit: 20}})
 * api('POST', '/posts', {json: {...}})
 * api('POST', '/tracks', {query: {...}, body: file, headers: {'Content-Type': file.type}})
 */
export async function api(method, path, opts = {}) {
  method = method.toUpperCase();
  const headers = { Accept: 'application/json', ...(opts.headers || {}) };
  let body = opts.body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const send = () => {
    if (UNSAFE.has(method) && csrfToken) headers['X-CSRF-Token'] = csrfToken;
    return fetch(buildUrl(path, opts.query), {
      method, headers, body, credentials: 'same-origin', cache: 'no-store',
    });
  };

  let res;
  try {
    res = await send();
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the node. Check your connection.');
  }
  let data = await parse(res);

  // A stale CSRF token (e.g. the session was refreshed in another tab):
  // fetch a fresh one and retry once. Request bodies here are strings or
  // Files, both of which can be sent again.
  if (res.status === 403 && data?.error?.code === 'csrf' && !opts.retried) {
    try {
      const me = await api('GET', '/me');
      setCsrf(me?.csrf);
      return await api(method, path, { ...opts, retried: true });
    } catch { /* fall through to the original error */ }
  }

  if (!res.ok) {
    const err = data?.error || {};
    const fallback = res.status === 413 ? 'That file is too large for this node.' : `Request failed (HTTP ${res.status}).`;
    const error = new ApiError(res.status, err.code || 'http_error', err.message || fallback);
    if (res.status === 401 && error.code === 'unauthenticated' && authLost && !opts.quiet401) {
      authLost(error);
    }
    throw error;
  }
  return data;
}

export const get = (path, query) => api('GET', path, { query });
export const post = (path, json) => api('POST', path, { json });
export const patch = (path, json) => api('PATCH', path, { json });
export const put = (path, json) => api('PUT', path, { json });
export const del = (path, query) => api('DELETE', path, { query });

/**
 * Cursor pager over a list endpoint: `await pager.next()` returns the next
 * page's items ([] when exhausted); `pager.done` tells whether more remain.
 */
export function pager(path, query = {}, limit = 30) {
  let cursor = null;
  const p = {
    done: false,
    async next() {
      if (p.done) return [];
      const data = await get(path, { ...query, limit, cursor });
      cursor = data?.next || null;
      p.done = !cursor;
      return Array.isArray(data?.items) ? data.items : [];
    },
  };
  return p;
}
