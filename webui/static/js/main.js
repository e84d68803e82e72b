// Entry point: session bootstrap, navigation bar, routes, service worker.
import { h, replace } from './dom.js';
import { onAuthLost } from './api.js';
import { session, loadMe, can, forget, onSessionChange } from './session.js';
import { route, setGuard, setNotFound, start, dispatch, navigate } from './router.js';
import * as signin from './signin.js';
import * as feed from './feed.js';
import * as messages from './messages.js';
import * as chat from './chat.js';
import * as jam from './jam.js';
import * as profile from './profile.js';
import * as library from './library.js';
import * as market from './market.js';
import * as courses from './courses.js';
import * as course from './course.js';
import * as members from './members.js';
import * as peers from './peers.js';
import * as nearby from './nearby.js';
import * as mic from './mic.js';
import * as settings from './settings.js';

const NAV = [
  { key: 'feed', label: 'Feed' },
  { key: 'messages', label: 'Messages', perm: 'post' },
  { key: 'chat', label: 'Chat' },
  { key: 'jam', label: 'Jam' },
  { key: 'library', label: 'Library' },
  { key: 'market', label: 'Market' },
  { key: 'courses', label: 'Courses' },
  { key: 'members', label: 'Members', perm: 'manage_users' },
  { key: 'peers', label: 'Peers' },
  { key: 'nearby', label: 'Nearby' },
  { key: 'settings', label: 'Settings' },
];

const viewEl = document.getElementById('view');
const navEl = document.getElementById('nav');
const whoEl = document.getElementById('whoami');
let renderSeq = 0;

function renderNav() {
  const me = session.me;
  navEl.hidden = !me;
  whoEl.hidden = !me;
  if (!me) { replace(navEl); replace(whoEl); return; }
  replace(navEl, h('ul', {}, NAV.filter((n) => !n.perm || can(n.perm)).map((n) =>
    h('li', {}, h('a', { id: `nav-${n.key}`, href: `#/${n.key}`, dataset: { key: n.key } }, n.label)))));
  replace(whoEl,
    h('a', { href: '#/settings', class: 'who-name', id: 'whoami-name' }, me.user?.name || '?'),
    h('span', { class: `badge badge-role role-${me.user?.role || 'guest'}`, id: 'whoami-role' }, me.user?.role || ''));
}

function markActive(key) {
  for (const a of navEl.querySelectorAll('a')) {
    if (a.dataset.key === key) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** Render a page into a fresh container; stale async renders write into detached nodes. */
async function show(page, params, title, navKey) {
  const seq = ++renderSeq;
  const fromNav = navEl.contains(document.activeElement);
  const container = h('div', { class: `page page-${navKey || 'other'}` });
  replace(viewEl, container);
  document.title = title ? `${title} · Talas` : 'Talas';
  markActive(navKey);
  window.scrollTo(0, 0);
  try {
    await page.render(container, params || {});
  } catch (err) {
    if (seq !== renderSeq) return;
    container.append(h('p', { class: 'error', role: 'alert' }, `Something went wrong: ${err?.message || err}`));
  }
  // Move focus to the page heading when the user navigated with the nav bar
  // (screen readers then announce the new page).
  if (seq === renderSeq && fromNav) container.querySelector('h1')?.focus();
}

function defineRoutes() {
  route('/signin', () => show(signin, {}, 'Sign in', null));
  route('/feed', () => show(feed, {}, 'Feed', 'feed'));
  route('/author/:id', (p) => show(profile, p, 'Author', null));
  route('/messages', () => show(messages, {}, 'Messages', 'messages'));
  route('/messages/:id', (p) => show(messages, p, 'Messages', 'messages'));
  route('/chat', () => show(chat, {}, 'Chat', 'chat'));
  route('/chat/:room', (p) => show(chat, p, 'Chat', 'chat'));
  route('/jam', () => show(jam, {}, 'Jam', 'jam'));
  route('/jam/:id', (p) => show(jam, p, 'Jam', 'jam'));
  route('/library', () => show(library, {}, 'Library', 'library'));
  route('/market', () => show(market, {}, 'Market', 'market'));
  route('/courses', () => show(courses, {}, 'Courses', 'courses'));
  route('/course/:id', (p) => show(course, p, 'Course', 'courses'));
  route('/members', () => show(members, {}, 'Members', 'members'));
  route('/peers', () => show(peers, {}, 'Peers', 'peers'));
  route('/nearby', () => show(nearby, {}, 'Nearby', 'nearby'));
  route('/mic/:serial', (p) => show(mic, p, 'Mic module', 'nearby'));
  route('/settings', () => show(settings, {}, 'Settings', 'settings'));
  setNotFound(() => navigate('/feed'));
  setGuard((path) => {
    if (!session.me) return path === '/signin' ? null : '/signin';
    if (path === '/signin' || path === '/') return '/feed';
    return null;
  });
}

function offlineBanner() {
  const banner = document.getElementById('offline-banner');
  const update = () => {
    banner.hidden = navigator.onLine;
    document.body.classList.toggle('offline', !navigator.onLine);
  };
  window.addEventListener('online', update);
  window.addEventListener('offline', update);
  update();
}

let started = false;

/** Start routing once (after the first successful /me). */
function startOnce() {
  if (started) { dispatch(); return; }
  started = true;
  start();
}

/** Load /me; when the node is unreachable offer a retry instead of a blank page. */
async function boot() {
  try {
    await loadMe();
  } catch (err) {
    const retry = h('button', { type: 'button', class: 'primary', id: 'retry' }, 'Try again');
    retry.addEventListener('click', boot);
    replace(viewEl, h('div', { class: 'card narrow center' },
      h('h1', {}, 'Cannot reach your node'),
      h('p', {}, err?.message || String(err)),
      retry));
    return;
  }
  startOnce();
}

onSessionChange(renderNav);
onAuthLost(() => {
  if (!session.me) return;
  forget();
  navigate('/signin');
});

if ('serviceWorker' in navigator) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((err) => {
      console.warn('Service worker registration failed:', err);
    });
  });
}

// The skip link would change the hash (our router); focus the content instead.
document.querySelector('.skip-link')?.addEventListener('click', (ev) => {
  ev.preventDefault();
  viewEl.focus();
});

offlineBanner();
defineRoutes();
boot();
// If the first /me failed because we were offline, try again once back online.
window.addEventListener('online', () => { if (!started) boot(); });
