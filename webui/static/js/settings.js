// #/settings — node info, account, password change, offline data, sign-out.
import { h, append, shortId } from './dom.js';
import { get, put, del } from './api.js';
import { session, user, forget } from './session.js';
import { navigate } from './router.js';
import { field, errorBox, showError, clearError, busy, pageHeader, section, statusLine } from './ui.js';

const kv = (rows) => h('dl', { class: 'kv' }, rows.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
const mono = (text) => h('span', { class: 'mono break' }, text);

async function nodeInfo() {
  const box = h('div', { id: 'node-info' }, h('p', { class: 'muted' }, 'Loading…'));
  get('/node').then((n) => {
    const addresses = n?.addresses && typeof n.addresses === 'object'
      ? Object.entries(n.addresses).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('\n')
      : '';
    const authors = Array.isArray(n?.authors) ? n.authors : [];
    box.replaceChildren(kv([
      ['Name', String(n?.name ?? '')],
      ['Node id', mono(String(n?.node_id ?? ''))],
      ['Version', String(n?.version ?? '')],
      ['Collective', session.me?.node?.collective ? mono(session.me.node.collective) : null],
      addresses ? ['Addresses', h('span', { class: 'pre' }, addresses)] : null,
      ['Events', String(n?.events?.count ?? '')],
      authors.length ? ['Authors', h('ul', { class: 'plain' }, authors.map((a) =>
        h('li', {}, h('a', { href: `#/author/${encodeURIComponent(a?.id || '')}` }, a?.name || shortId(a?.id)))))] : null,
    ].filter((row) => row && row[1] !== null)));
  }).catch((err) => { box.replaceChildren(h('p', { class: 'error', role: 'alert' }, err.message)); });
  return box;
}

function passwordForm() {
  const current = h('input', { id: 'password-current', type: 'password', autocomplete: 'current-password', required: true });
  const next = h('input', { id: 'password-new', type: 'password', autocomplete: 'new-password', required: true, minlength: '10' });
  const again = h('input', { id: 'password-confirm', type: 'password', autocomplete: 'new-password', required: true, minlength: '10' });
  const submit = h('button', { id: 'password-submit', type: 'submit', class: 'primary' }, 'Change password');
  const error = errorBox('password-error');
  const status = statusLine('password-status');
  // A hidden username field helps password managers pick the right entry.
  const name = h('input', { type: 'text', autocomplete: 'username', value: user()?.name || '', hidden: true, readOnly: true, 'aria-hidden': 'true', tabindex: '-1' });
  const form = h('form', { id: 'password-form', novalidate: true },
    name,
    field('Current password', current), field('New password', next, 'At least 10 characters.'),
    field('Repeat new password', again), error, status, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    status.textContent = '';
    if (next.value.length < 10) { showError(error, 'The new password needs at least 10 characters.'); return; }
    if (next.value !== again.value) { showError(error, 'The new passwords do not match.'); return; }
    try {
      await busy(submit, () => put('/me/password', { current: current.value, new: next.value }));
      form.reset();
      name.value = user()?.name || '';
      status.textContent = 'Password changed.';
    } catch (err) { showError(error, err); }
  });
  return form;
}

function offlineControls() {
  if (!('caches' in window)) return null;
  const status = statusLine('offline-status');
  const button = h('button', { id: 'clear-offline', type: 'button' }, 'Remove offline audio');
  button.addEventListener('click', async () => {
    const names = (await caches.keys()).filter((n) => n.startsWith('talas-media'));
    await Promise.all(names.map((n) => caches.delete(n)));
    status.textContent = 'Offline audio removed from this device.';
  });
  return section('This device',
    h('p', { class: 'muted' }, 'Tracks you play are kept on this device so they play offline.'),
    h('div', { class: 'actions' }, button), status);
}

export async function render(view) {
  const u = user();
  append(view, pageHeader('Settings'));
  const signout = h('button', { id: 'signout', type: 'button', class: 'danger' }, 'Sign out');
  signout.addEventListener('click', async () => {
    try { await busy(signout, () => del('/session')); } catch { /* signed out either way */ }
    forget();
    navigate('/signin');
  });
  append(view,
    section('Account',
      kv([['Name', u?.name || ''], ['Role', u?.role || ''],
        ['Author id', h('a', { href: `#/author/${encodeURIComponent(u?.author || '')}`, class: 'mono break' }, u?.author || '')]]),
      h('div', { class: 'actions' }, signout)),
    section('Change password', passwordForm()),
    section('Node', await nodeInfo()),
    offlineControls());
}
