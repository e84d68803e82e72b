// #/settings — profiles, node info, account, password change, offline data, sign-out.
import { h, append, shortId } from './dom.js';
import { get, post, put, del } from './api.js';
import { session, user, can, forget } from './session.js';
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

// Limits of a profile body (protocol/kinds.py), counted in code points like the server.
const NAME_MAX = 100;
const BIO_MAX = 5000;
const codePoints = (text) => Array.from(text).length;

/**
 * A form publishing a profile (POST /profile) for `authorId`, prefilled from
 * GET /authors/<id>. `prefix` names the controls (#<prefix>-name, …);
 * `as` is 'me' or 'collective'.
 */
function profileForm({ prefix, authorId, as, intro }) {
  const name = h('input', {
    id: `${prefix}-name`, required: true, autocomplete: as === 'me' ? 'nickname' : 'off', disabled: true,
  });
  const bio = h('textarea', { id: `${prefix}-bio`, rows: '4', disabled: true });
  const submit = h('button', { id: `${prefix}-submit`, type: 'submit', class: 'primary', disabled: true }, 'Publish profile');
  const error = errorBox(`${prefix}-error`);
  const status = statusLine(`${prefix}-status`);
  const form = h('form', { id: `${prefix}-form`, novalidate: true },
    intro ? h('p', { class: 'muted' }, intro) : null,
    field('Name', name, `Shown to everyone, also on other nodes. 1–${NAME_MAX} characters.`),
    field('About', bio, `Optional, up to ${BIO_MAX} characters.`),
    error, status, h('div', { class: 'actions' }, submit));

  // Controls stay disabled until the current profile is loaded, so nothing
  // typed meanwhile is overwritten by the prefill.
  const ready = () => { name.disabled = false; bio.disabled = false; submit.disabled = false; };
  if (authorId) {
    get(`/authors/${encodeURIComponent(authorId)}`)
      .then((a) => {
        name.value = typeof a?.name === 'string' ? a.name : '';
        bio.value = typeof a?.bio === 'string' ? a.bio : '';
      })
      .catch((err) => showError(error, `Could not load the current profile: ${err.message}`))
      .finally(ready);
  } else {
    ready();
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    status.textContent = '';
    const body = { name: name.value.trim(), bio: bio.value, as };
    const n = codePoints(body.name);
    if (n < 1) { showError(error, 'Enter a name.'); name.focus(); return; }
    if (n > NAME_MAX) { showError(error, `The name is ${n} characters long; the limit is ${NAME_MAX}.`); name.focus(); return; }
    const b = codePoints(body.bio);
    if (b > BIO_MAX) { showError(error, `The text is ${b} characters long; the limit is ${BIO_MAX}.`); bio.focus(); return; }
    if (body.name.includes('\u0000') || body.bio.includes('\u0000')) { showError(error, 'The profile contains a NUL character.'); return; }
    try {
      await busy(submit, () => post('/profile', body));
      name.value = body.name;
      status.textContent = 'Profile published.';
    } catch (err) { showError(error, err); }
  });
  return form;
}

function profileSections() {
  const u = user();
  if (!can('post')) {
    return section('Your profile', h('p', { class: 'muted', id: 'profile-readonly' }, 'Your role cannot publish a profile.'));
  }
  const collective = session.me?.node?.collective;
  return [
    section('Your profile', profileForm({ prefix: 'profile', authorId: u?.author, as: 'me' })),
    can('post_as_collective') && collective
      ? section('Collective profile', profileForm({
        prefix: 'collective',
        authorId: collective,
        as: 'collective',
        intro: `How ${session.me?.node?.name || 'this node'} presents itself as a collective.`,
      }))
      : null,
  ];
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
    profileSections(),
    section('Change password', passwordForm()),
    section('Node', await nodeInfo()),
    offlineControls());
}
