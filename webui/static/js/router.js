// Minimal hash router: '#/author/<id>' → handler({id}).

const routes = [];
let guard = null;
let notFound = null;
let leaveController = new AbortController();

/** Register a route, e.g. route('/course/:id', ({id}) => ...). */
export function route(pattern, handler) {
  const names = [];
  const source = pattern.replace(/:([a-z]+)/g, (_, name) => { names.push(name); return '([^/]+)'; });
  routes.push({ regex: new RegExp(`^${source}$`), names, handler, pattern });
}

/** guard(path) may return another path to redirect to (e.g. '/signin'). */
export function setGuard(fn) { guard = fn; }
export function setNotFound(fn) { notFound = fn; }

export function currentPath() {
  const raw = location.hash.replace(/^#/, '');
  return raw.startsWith('/') ? raw : '/';
}

export function navigate(path) {
  if (currentPath() === path) dispatch();
  else location.hash = `#${path}`;
}

/**
 * An AbortSignal that fires when the current route is left (the next
 * dispatch). Pages take it synchronously at the start of render() — before
 * any await — and stop their timers, streams and listeners on 'abort';
 * after an await they check `signal.aborted` before starting anything new.
 */
export function leaving() { return leaveController.signal; }

/** Run `fn` every `ms` milliseconds until `signal` aborts. */
export function every(ms, fn, signal) {
  if (signal.aborted) return;
  const timer = setInterval(fn, ms);
  signal.addEventListener('abort', () => clearInterval(timer), { once: true });
}

export function dispatch() {
  // Tear down whatever the previous page started before rendering the next.
  leaveController.abort();
  leaveController = new AbortController();
  const path = currentPath();
  const redirect = guard ? guard(path) : null;
  if (redirect && redirect !== path) { navigate(redirect); return; }
  for (const r of routes) {
    const m = r.regex.exec(path);
    if (!m) continue;
    const params = {};
    r.names.forEach((name, i) => {
      try { params[name] = decodeURIComponent(m[i + 1]); } catch { params[name] = m[i + 1]; }
    });
    r.handler(params, r.pattern);
    return;
  }
  if (notFound) notFound(path);
}

export function start() {
  window.addEventListener('hashchange', dispatch);
  dispatch();
}
