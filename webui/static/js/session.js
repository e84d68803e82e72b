// Who is signed in, and what they may do. Filled from GET /api/v1/me.
import { api, setCsrf, ApiError } from './api.js';

export const session = {
  me: null, // {user, csrf, permissions, node} or null when signed out
};

const listeners = new Set();

/** Call fn() whenever the signed-in state changes. */
export function onSessionChange(fn) { listeners.add(fn); }

function changed() { for (const fn of listeners) fn(session.me); }

export function can(permission) {
  return Boolean(session.me?.permissions?.includes(permission));
}

export function user() { return session.me?.user || null; }

/** True when `authorId` is the signed-in user's own author key. */
export function isMine(authorId) { return Boolean(authorId) && user()?.author === authorId; }

/**
 * May the current user delete this item? Own content always; moderators
 * may also delete content of this node's authors (item.local).
 */
export function canDelete(item) {
  return isMine(item?.author) || (can('moderate') && item?.local === true);
}

/** (Re)load /me. Returns the session or null on 401; other errors propagate. */
export async function loadMe() {
  try {
    const me = await api('GET', '/me', { quiet401: true });
    session.me = me;
    setCsrf(me?.csrf);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    session.me = null;
    setCsrf(null);
  }
  changed();
  return session.me;
}

/** Forget the session locally (after sign-out or a 401). */
export function forget() {
  session.me = null;
  setCsrf(null);
  changed();
}
