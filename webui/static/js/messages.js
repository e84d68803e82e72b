// #/messages and #/messages/<author> — end-to-end encrypted direct messages:
// the people you have written with, one conversation, and a compose box.
import { h, replace, shortId, fmtDate } from './dom.js';
import { get, post } from './api.js';
import { can, isMine } from './session.js';
import { leaving, every, navigate } from './router.js';
import { field, errorBox, showError, clearError, busy, pageHeader } from './ui.js';

const REFRESH_MS = 3000;
const MAX_TEXT = 4000; // protocol/direct_message.py MAX_TEXT
const AUTHOR_ID = /^[0-9a-f]{64}$/;
const NAME_LOOKUPS = 20; // per page: unnamed partners whose profile we ask for

// Author id → display name (null: asked, none). Lives for the session.
const names = new Map();

const text = (v) => (typeof v === 'string' ? v : '');

/** Today: the time; otherwise the date. The full date/time is in the title. */
function whenEl(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return h('time', {});
  const d = new Date(ms);
  const today = d.toDateString() === new Date().toDateString();
  const label = today
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString();
  return h('time', { datetime: d.toISOString(), title: fmtDate(ms) }, label);
}

/** The best name we know for an author (a profile name, a member name, or null). */
async function lookUpName(id) {
  if (names.has(id)) return names.get(id);
  let name = null;
  try {
    const author = await get(`/authors/${encodeURIComponent(id)}`);
    name = text(author?.name) || text(author?.local_user) || null;
  } catch { /* unknown author: the short id will do */ }
  names.set(id, name);
  return name;
}

const displayName = (id, name) => text(name) || names.get(id) || shortId(id);

function partnerRow(p, openId) {
  const id = text(p.with);
  const current = id === openId;
  return h('li', { class: 'dm-partner', dataset: { id } },
    h('a', { href: `#/messages/${encodeURIComponent(id)}`, 'aria-current': current ? 'page' : null, title: id },
      h('span', { class: 'dm-partner-name' }, displayName(id, p.name)),
      whenEl(p.latest)));
}

function messageRow(m, partnerName) {
  const mine = isMine(m.from);
  return h('li', { class: mine ? 'dm-message mine' : 'dm-message', dataset: { id: text(m.id) } },
    h('span', { class: 'visually-hidden' }, mine ? 'You: ' : `${partnerName}: `),
    h('p', { class: 'dm-text' }, text(m.text)),
    whenEl(m.sent));
}

/** "Write to…": open a conversation with any author id. */
function newConversationForm() {
  const to = h('input', {
    id: 'dm-new-to', placeholder: '64 hex characters', autocapitalize: 'none',
    spellcheck: 'false', autocomplete: 'off', maxlength: '64',
  });
  const open = h('button', { id: 'dm-new-open', type: 'submit' }, 'Open');
  const error = errorBox('dm-new-error');
  const form = h('form', { id: 'dm-new', class: 'inline dm-new', novalidate: true },
    field('New message to (author id)', to), open, error);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    clearError(error);
    const id = to.value.trim().toLowerCase();
    if (!AUTHOR_ID.test(id)) {
      showError(error, 'An author id is 64 hex characters (see the author’s profile page).');
      to.focus();
      return;
    }
    if (isMine(id)) {
      showError(error, 'That is your own author id.');
      to.focus();
      return;
    }
    to.value = '';
    navigate(`/messages/${id}`);
  });
  return form;
}

/**
 * The open conversation: header, messages, compose box; refreshed by the page.
 * `onSent` runs after each message sent (the partner list may change).
 */
function conversation(id, signal, onSent) {
  const title = h('h2', { id: 'dm-with' }, displayName(id, null));
  const thread = h('ol', {
    id: 'dm-thread', class: 'dm-thread', role: 'log', tabindex: '0', 'aria-labelledby': 'dm-with',
  });
  const empty = h('p', { id: 'dm-empty', class: 'muted empty', hidden: true }, 'No messages yet. Say hello!');
  const unreadable = h('p', { id: 'dm-unreadable', class: 'muted small', hidden: true });
  const error = errorBox('dm-error');
  const input = h('textarea', {
    id: 'dm-text', rows: '2', maxlength: String(MAX_TEXT), placeholder: 'Write a message…',
  });
  const send = h('button', { id: 'dm-send', type: 'submit', class: 'primary' }, 'Send');
  const form = h('form', { id: 'dm-compose', class: 'dm-compose', novalidate: true },
    field('Message', input, 'End-to-end encrypted. Ctrl+Enter sends.'),
    h('div', { class: 'actions' }, send));
  const panel = h('section', { id: 'dm-conversation', class: 'card dm-conversation', 'aria-labelledby': 'dm-with' },
    h('a', { class: 'back dm-back', href: '#/messages' }, '← All conversations'),
    h('div', { class: 'dm-head' }, title,
      h('a', { class: 'dm-profile small', href: `#/author/${encodeURIComponent(id)}` }, 'Profile')),
    h('p', { class: 'mono small muted dm-id' }, id),
    unreadable, thread, empty, error, form);

  let shown = []; // ids of the rendered messages, in order
  let loadFailed = false;
  let partnerName = title.textContent;

  const nearBottom = () => thread.scrollHeight - thread.scrollTop - thread.clientHeight < 48;
  const toBottom = () => { thread.scrollTop = thread.scrollHeight; };

  /** Render `items`, appending when the rendered ones are a prefix (no flicker, polite log). */
  function paint(items) {
    const ids = items.map((m) => text(m.id));
    const stick = nearBottom() || shown.length === 0;
    const prefix = shown.length <= ids.length && shown.every((x, i) => x === ids[i]);
    if (prefix) {
      for (const m of items.slice(shown.length)) thread.append(messageRow(m, partnerName));
    } else {
      replace(thread, items.map((m) => messageRow(m, partnerName)));
    }
    shown = ids;
    empty.hidden = ids.length > 0;
    if (stick) toBottom();
  }

  async function load() {
    try {
      const data = await get('/dms', { with: id });
      if (signal.aborted) return;
      if (loadFailed) { clearError(error); loadFailed = false; }
      const n = Number(data?.unreadable) || 0;
      unreadable.hidden = n === 0;
      unreadable.textContent = n === 1 ? '1 message could not be opened.' : `${n} messages could not be opened.`;
      paint(Array.isArray(data?.items) ? data.items : []);
    } catch (err) {
      if (signal.aborted) return;
      loadFailed = true;
      showError(error, err);
    }
  }

  async function submit() {
    clearError(error);
    loadFailed = false;
    const value = input.value;
    if (!value.trim()) { showError(error, 'Write something first.'); input.focus(); return; }
    if (value.length > MAX_TEXT) { showError(error, `A message is at most ${MAX_TEXT} characters.`); input.focus(); return; }
    try {
      const sent = await busy(send, () => post('/dms', { to: id, text: value }));
      if (signal.aborted) return;
      input.value = '';
      if (sent?.id && !shown.includes(sent.id)) {
        thread.append(messageRow(sent, partnerName));
        shown.push(text(sent.id));
        empty.hidden = true;
      }
      toBottom();
      input.focus();
      onSent();
    } catch (err) {
      if (!signal.aborted) showError(error, err);
    }
  }

  form.addEventListener('submit', (ev) => { ev.preventDefault(); submit(); });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); submit(); }
  });

  /** A better name arrived (profile lookup): use it from now on. */
  function rename(name) {
    if (!name || name === partnerName) return;
    partnerName = name;
    title.textContent = name;
    for (const label of thread.querySelectorAll('.dm-message:not(.mine) .visually-hidden')) label.textContent = `${name}: `;
  }

  return { panel, load, rename };
}

export async function render(view, params) {
  const signal = leaving();
  view.append(pageHeader('Messages', 'Direct messages, end-to-end encrypted between you and another artist.'));
  if (!can('post')) {
    view.append(h('p', { id: 'dm-error', class: 'error', role: 'alert' }, 'Your role cannot send or read direct messages.'));
    return;
  }

  const raw = text(params?.id).trim().toLowerCase();
  const partnersError = errorBox('dm-partners-error');
  const partners = h('ul', { id: 'dm-partners', class: 'dm-partners', 'aria-label': 'Conversations' });
  const partnersEmpty = h('p', { class: 'muted empty', hidden: true }, 'No conversations yet.');
  const side = h('section', { class: 'card dm-side', 'aria-labelledby': 'dm-partners-title' },
    h('h2', { id: 'dm-partners-title' }, 'Conversations'),
    newConversationForm(), partnersError, partners, partnersEmpty);
  const layout = h('div', { class: raw ? 'dm-layout open' : 'dm-layout' }, side);
  view.append(layout);

  let openId = null;
  let convo = null;
  if (raw && !AUTHOR_ID.test(raw)) {
    layout.append(h('section', { class: 'card dm-conversation' },
      h('a', { class: 'back dm-back', href: '#/messages' }, '← All conversations'),
      h('p', { id: 'dm-error', class: 'error', role: 'alert' }, 'This is not an author id (64 hex characters).')));
  } else if (raw && isMine(raw)) {
    layout.append(h('section', { class: 'card dm-conversation' },
      h('a', { class: 'back dm-back', href: '#/messages' }, '← All conversations'),
      h('p', { id: 'dm-error', class: 'error', role: 'alert' }, 'You cannot write to yourself.')));
  } else if (raw) {
    openId = raw;
  } else {
    layout.append(h('section', { class: 'card dm-conversation dm-placeholder' },
      h('p', { class: 'muted' }, 'Choose a conversation, or start one with an author id. '
        + 'Every profile page has its author id and a “Message” link.')));
  }

  let partnerSig = '';
  async function loadPartners() {
    try {
      const items = ((await get('/dms'))?.items || []).filter((p) => AUTHOR_ID.test(text(p?.with)));
      if (signal.aborted) return;
      clearError(partnersError);
      const sig = JSON.stringify(items.map((p) => [p.with, displayName(p.with, p.name), p.latest]));
      if (sig === partnerSig) return;
      partnerSig = sig;
      const paint = () => replace(partners, items.map((p) => partnerRow(p, openId)));
      paint();
      partnersEmpty.hidden = items.length > 0;
      // Remote partners carry no name in the list: ask their profiles, once each.
      const unnamed = items.filter((p) => !text(p.name) && !names.has(p.with)).slice(0, NAME_LOOKUPS);
      if (unnamed.length) {
        await Promise.all(unnamed.map((p) => lookUpName(p.with)));
        if (signal.aborted || sig !== partnerSig) return;
        partnerSig = JSON.stringify(items.map((p) => [p.with, displayName(p.with, p.name), p.latest]));
        paint();
      }
    } catch (err) {
      if (!signal.aborted) showError(partnersError, err);
    }
  }

  if (openId) {
    convo = conversation(openId, signal, () => loadPartners());
    layout.append(convo.panel);
  }

  let refreshing = null;
  function refresh() {
    // One refresh at a time: a slow node must not pile up requests.
    if (!refreshing) {
      refreshing = Promise.all([loadPartners(), convo ? convo.load() : null])
        .finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  if (openId) lookUpName(openId).then((name) => { if (!signal.aborted) convo.rename(name); });
  await refresh();
  if (signal.aborted) return;
  every(REFRESH_MS, () => { if (!document.hidden) refresh(); }, signal);
}
