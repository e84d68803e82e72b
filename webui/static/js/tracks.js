// Track lookup (blob hash → Track) and audio players.
// Posts reference tracks by blob hash; the playable, signed URL lives on the
// Track item. We keep a small cache filled from GET /api/v1/tracks (this
// node's authors) and, for remote posts, GET /api/v1/tracks?author=ID.
import { get } from './api.js';
import { h, safePath } from './dom.js';

const TTL_MS = 5 * 60 * 1000; // signed URLs expire; refetch lists after this
const MAX_PAGES = 10;

const byBlob = new Map(); // blob → Track
const loads = new Map(); // author ('' = this node) → {at, promise}

/** Add tracks we already have (e.g. from the library page) to the cache. */
export function rememberTracks(tracks) {
  for (const t of tracks) if (t?.body?.blob) byBlob.set(t.body.blob, t);
}

export function forgetTrack(track) {
  if (track?.body?.blob) byBlob.delete(track.body.blob);
}

/** Drop every cached list so the next lookup refetches (fresh signed URLs). */
export function invalidateTracks() { loads.clear(); }

async function fetchAll(author) {
  const all = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const data = await get('/tracks', { author: author || null, limit: 100, cursor });
    all.push(...(data?.items || []));
    cursor = data?.next;
    if (!cursor) break;
  }
  rememberTracks(all);
  return all;
}

/** All tracks of `author` ('' = this node's authors), cached for TTL_MS. */
export function listTracks(author = '', force = false) {
  const hit = loads.get(author);
  if (hit && !force && Date.now() - hit.at < TTL_MS) return hit.promise;
  const promise = fetchAll(author);
  loads.set(author, { at: Date.now(), promise });
  promise.catch(() => loads.delete(author));
  return promise;
}

/** Find the Track for a blob hash, looking at this node then at `author`. */
export async function findTrack(blob, author, force = false) {
  if (!force && byBlob.has(blob)) return byBlob.get(blob);
  if (force) byBlob.delete(blob);
  await listTracks('', force).catch(() => []);
  if (byBlob.has(blob)) return byBlob.get(blob);
  if (author) await listTracks(author, force).catch(() => []);
  return byBlob.get(blob) || null;
}

/**
 * <audio controls> for a Track. If playback fails (typically an expired
 * signed URL) we refetch the track once and retry with the new URL. The
 * service worker keys cached audio by path, so offline replay ignores the
 * query string anyway.
 */
export function audioFor(track, extraClass = '') {
  const src = safePath(track?.url);
  if (!src) {
    return h('p', { class: 'muted no-audio' }, 'Audio not stored on this node.');
  }
  const title = track.body?.title || track.filename || 'track';
  const audio = h('audio', {
    controls: true, preload: 'none', class: `track-audio ${extraClass}`.trim(),
    src, 'aria-label': `Play ${title}`,
  });
  let retried = false;
  audio.addEventListener('error', async () => {
    if (retried || !navigator.onLine) return;
    retried = true;
    const fresh = await findTrack(track.body?.blob, track.author, true).catch(() => null);
    const url = safePath(fresh?.url);
    if (url && url !== audio.getAttribute('src')) {
      audio.src = url;
      audio.load();
    }
  });
  return audio;
}

/** Player block for a blob referenced from a post: resolves asynchronously. */
export function attachedTrack(ref, author) {
  const blob = typeof ref === 'string' ? ref : ref?.blob;
  const box = h('figure', { class: 'post-track' },
    h('figcaption', {}, h('span', { class: 'muted' }, 'Loading track…')));
  if (typeof blob !== 'string' || !blob) {
    box.firstChild.textContent = 'Unknown track reference.';
    return box;
  }
  findTrack(blob, author).then((track) => {
    const caption = box.querySelector('figcaption');
    if (!track) {
      caption.textContent = 'Track not available on this node.';
      return;
    }
    caption.textContent = track.body?.title || track.filename || 'Untitled track';
    box.append(audioFor(track));
  });
  return box;
}
