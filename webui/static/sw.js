// Talas service worker (served at /sw.js, scope /).
// - app shell: precached in a versioned cache; cache-first for /static/*,
//   network-first (cache fallback) for navigations to '/'.
// - /api/*: never touched — always the network.
// - /media/tracks/<blob>: cached under the path WITHOUT the query string
//   (signed URLs change); the full file is fetched once, Range requests are
//   answered by slicing the cached blob, so played tracks work offline.
// The node replaces VERSION with a digest of webui/static when it serves this
// file, so any change to the shell installs a fresh cache.

const VERSION = 'dev';
const SHELL_CACHE = `talas-shell-${VERSION}`;
const MEDIA_CACHE = 'talas-media-v1'; // survives shell updates; also named in js/library.js

const SHELL = [
  '/',
  '/static/app.css',
  '/manifest.webmanifest',
  '/static/icons/icon.svg',
  '/static/icons/icon-192.png',
  '/static/icons/icon-512.png',
  '/static/icons/icon-maskable-512.png',
  '/static/js/main.js',
  '/static/js/api.js',
  '/static/js/dom.js',
  '/static/js/router.js',
  '/static/js/session.js',
  '/static/js/ui.js',
  '/static/js/render.js',
  '/static/js/tracks.js',
  '/static/js/signin.js',
  '/static/js/feed.js',
  '/static/js/messages.js',
  '/static/js/chat.js',
  '/static/js/jam.js',
  '/static/js/profile.js',
  '/static/js/library.js',
  '/static/js/market.js',
  '/static/js/courses.js',
  '/static/js/course.js',
  '/static/js/members.js',
  '/static/js/peers.js',
  '/static/js/nearby.js',
  '/static/js/mic.js',
  '/static/js/settings.js',
];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(SHELL_CACHE);
    // cache: 'reload' bypasses the HTTP cache so a new version gets fresh files.
    await cache.addAll(SHELL.map((url) => new Request(url, { cache: 'reload' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    const keep = new Set([SHELL_CACHE, MEDIA_CACHE]);
    const names = await caches.keys();
    await Promise.all(names
      .filter((n) => n.startsWith('talas-') && !keep.has(n))
      .map((n) => caches.delete(n)));
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  const path = url.pathname;

  if (path.startsWith('/api/')) return; // network only, never cached
  if (path.startsWith('/media/tracks/')) {
    event.respondWith(media(request, url));
    return;
  }
  if (path === '/') {
    event.respondWith(networkFirst(request));
    return;
  }
  if (request.mode === 'navigate') return; // other pages: plain network
  if (path.startsWith('/static/') || path === '/manifest.webmanifest') {
    event.respondWith(cacheFirst(request));
  }
});

async function networkFirst(request) {
  const cache = await caches.open(SHELL_CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.type === 'basic') await cache.put('/', response.clone());
    return response;
  } catch (err) {
    const cached = await cache.match('/');
    if (cached) return cached;
    throw err;
  }
}

async function cacheFirst(request) {
  const cache = await caches.open(SHELL_CACHE);
  const cached = await cache.match(request, { ignoreSearch: true });
  if (cached) return cached;
  const response = await fetch(request);
  if (response.ok && response.type === 'basic') cache.put(request, response.clone()).catch(() => {});
  return response;
}

// ---- audio -----------------------------------------------------------------

// One full download per blob even when the player fires several requests.
const inflight = new Map();

async function media(request, url) {
  const key = url.origin + url.pathname; // signed query string stripped
  const cache = await caches.open(MEDIA_CACHE);
  let cached = await cache.match(key);
  if (!cached) {
    try {
      cached = await fetchWhole(cache, key, url.href);
    } catch {
      // Offline and never played: nothing to give.
      return new Response('offline', { status: 503, statusText: 'Offline' });
    }
    if (!cached.ok) return cached; // e.g. 403 expired signature: let the page retry
  }
  return fromBlob(cached, request.headers.get('Range'));
}

/** GET the whole file (no Range header) and store it under `key`. */
function fetchWhole(cache, key, href) {
  if (inflight.has(key)) return inflight.get(key).then((r) => r.clone());
  const job = (async () => {
    const response = await fetch(href, { credentials: 'same-origin', cache: 'no-store' });
    if (response.status !== 200) return response;
    const blob = await response.blob();
    const headers = new Headers({
      'Content-Type': response.headers.get('Content-Type') || blob.type || 'application/octet-stream',
      'Content-Length': String(blob.size),
      'Accept-Ranges': 'bytes',
    });
    const stored = new Response(blob, { status: 200, headers });
    try {
      await cache.put(key, stored.clone());
    } catch { /* quota exceeded: still play it this time */ }
    return stored;
  })();
  inflight.set(key, job);
  job.finally(() => inflight.delete(key)).catch(() => {});
  return job.then((r) => r.clone());
}

/** Answer from a cached full response, honouring a single "bytes=" range. */
async function fromBlob(response, range) {
  const blob = await response.blob();
  const size = blob.size;
  const type = response.headers.get('Content-Type') || blob.type || 'application/octet-stream';
  if (!range) {
    return new Response(blob, {
      status: 200,
      headers: { 'Content-Type': type, 'Content-Length': String(size), 'Accept-Ranges': 'bytes' },
    });
  }
  const m = /^bytes=(\d*)-(\d*)$/.exec(range.split(',')[0].trim());
  let start;
  let end;
  if (m && m[1] !== '') {
    start = Number(m[1]);
    end = m[2] !== '' ? Math.min(Number(m[2]), size - 1) : size - 1;
  } else if (m && m[2] !== '') {
    // Suffix range: the last N bytes.
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  }
  if (!m || start === undefined || start >= size || start > end) {
    return new Response(null, {
      status: 416,
      headers: { 'Content-Range': `bytes */${size}`, 'Accept-Ranges': 'bytes' },
    });
  }
  const part = blob.slice(start, end + 1, type);
  return new Response(part, {
    status: 206,
    headers: {
      'Content-Type': type,
      'Content-Length': String(part.size),
      'Content-Range': `bytes ${start}-${end}/${size}`,
      'Accept-Ranges': 'bytes',
    },
  });
}
