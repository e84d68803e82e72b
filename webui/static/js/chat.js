// #/chat and #/chat/<room> — live chat rooms shared with other nodes:
// the rooms this node is in, a join form, one room's history and a compose box.
import { h, replace, shortId, fmtDate } from './dom.js';
import { get, post } from './api.js';
import { can } from './session.js';
import { leaving, every } from './router.js';
import { field, errorBox, showError, clearError, busy, pageHeader } from './ui.js';

const POLL_MS = 2000;
const PAGE = 100;
const MAX_PAGES = 20; // first load: at most this many pages of history

const text = (v) => (typeof v === 'string' ? v : '');
const roomHref = (room) => `#/chat/${encodeURIComponent(room)}`;

/** Errors in plain words; the node without a p2p listener gets a clear explanation. */
function explain(err) {
  if (err?.code === 'not_federating') {
    return 'Chat is not available: this node is not federating (it runs without its '
      + 'peer-to-peer listener). Start it with --p2p to chat with other nodes.';
  }
  if (err?.code === 'offline') return `Some peers are not connected: ${err.message}`;
  return err;
}

function roomRow(r) {
  const room = text(r?.room);
  const members = Array.isArray(r?.members) ? r.members : [];
  const online = members.filter((m) => m?.connected || m?.self).length;
  return h('li', { class: 'chat-room', dataset: { room } },
    h('a', { href: roomHref(room), class: 'chat-room-name' }, room),
    h('span', { class: 'muted small chat-room-count' },
      `${members.length} member${members.length === 1 ? '' : 's'}, ${online} online`),
    h('ul', { class: 'chat-members', 'aria-label': 'Members' }, members.map((m) =>
      h('li', {
        class: m?.connected || m?.self ? 'chat-member connected' : 'chat-member',
        title: text(m?.node_id),
      }, `${m?.connected || m?.self ? '●' : '○'} ${m?.self ? 'this node' : shortId(text(m?.node_id))}`))));
}

function joinForm(error) {
  const name = h('input', { id: 'chat-room-name', required: true, autocomplete: 'off', maxlength: '64' });
  const peers = h('textarea', {
    id: 'chat-room-peers', rows: '3', autocapitalize: 'none', spellcheck: 'false',
    placeholder: 'one node id per line',
  });
  const join = h('button', { id: 'chat-join', type: 'submit', class: 'primary' }, 'Join');
  const form = h('form', { id: 'chat-join-form', novalidate: true },
    field('Room', name),
    field('Peers (node ids)', peers, 'Nodes to invite, one 64-hex node id per line. Leave empty to open a room alone.'),
    h('div', { class: 'actions' }, join));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const room = name.value.trim();
    if (!room) { showError(error, 'Give the room a name.'); name.focus(); return; }
    const ids = peers.value.split(/\s+/).map((s) => s.trim().toLowerCase()).filter(Boolean);
    try {
      const made = await busy(join, () => post('/chat/rooms', { room, peers: ids }));
      location.hash = roomHref(text(made?.room) || room);
    } catch (err) {
      showError(error, explain(err));
    }
  });
  return form;
}

function messageRow(m) {
  const sent = typeof m?.sent_ms === 'number' ? m.sent_ms : null;
  return h('li', { class: m?.local ? 'chat-message local' : 'chat-message', dataset: { id: text(m?.id) } },
    h('span', { class: 'chat-author' }, text(m?.author_name) || shortId(text(m?.author))),
    ' ',
    h('time', { datetime: sent ? new Date(sent).toISOString() : null, class: 'muted small' }, fmtDate(sent)),
    h('p', { class: 'chat-text' }, text(m?.text)));
}

async function renderRooms(view, signal) {
  const error = errorBox('chat-error');
  const list = h('ul', { id: 'chat-rooms', class: 'chat-rooms', 'aria-label': 'Rooms' });
  const empty = h('p', { class: 'muted empty', hidden: true }, 'This node is in no room yet.');
  view.append(h('section', { class: 'card' }, h('h2', {}, 'Rooms'), error, list, empty));
  if (can('post')) view.append(h('section', { class: 'card' }, h('h2', {}, 'Join or open a room'), joinForm(error)));
  try {
    const data = await get('/chat/rooms');
    if (signal.aborted) return;
    const rooms = Array.isArray(data?.rooms) ? data.rooms : [];
    replace(list, rooms.map(roomRow));
    empty.hidden = rooms.length > 0;
  } catch (err) {
    if (!signal.aborted) showError(error, explain(err));
  }
}

async function renderRoom(view, room, signal) {
  const error = errorBox('chat-error');
  const thread = h('ol', { id: 'chat-thread', class: 'dm-thread chat-thread', role: 'log', tabindex: '0', 'aria-label': `Room ${room}` });
  const empty = h('p', { id: 'chat-empty', class: 'muted empty', hidden: true }, 'No messages yet.');
  const panel = h('section', { class: 'card chat-room-view' },
    h('a', { class: 'back', href: '#/chat' }, '← All rooms'),
    h('h2', { id: 'chat-room-title' }, room), thread, empty, error);
  view.append(panel);

  const seen = new Set();
  let cursor = null;
  let failed = false;
  const toBottom = () => { thread.scrollTop = thread.scrollHeight; };
  const add = (items) => {
    for (const m of items) {
      const id = text(m?.id);
      if (id && seen.has(id)) continue;
      if (id) seen.add(id);
      thread.append(messageRow(m));
    }
    empty.hidden = seen.size > 0 || thread.childElementCount > 0;
  };

  /** Fetch everything after the last cursor (several pages when needed). */
  let running = null;
  function fetchNew(maxPages = 1) {
    if (running) return running;
    running = (async () => {
      try {
        for (let i = 0; i < maxPages; i += 1) {
          const data = await get(`/chat/rooms/${encodeURIComponent(room)}/messages`, { after: cursor, limit: PAGE });
          if (signal.aborted) return;
          const items = Array.isArray(data?.items) ? data.items : [];
          const stick = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 48;
          add(items);
          if (items.length) cursor = text(items[items.length - 1]?.cursor) || cursor;
          if (stick || i === 0) toBottom();
          if (failed) { clearError(error); failed = false; }
          if (!data?.next) break;
        }
      } catch (err) {
        if (signal.aborted) return;
        failed = true;
        showError(error, explain(err));
      }
    })().finally(() => { running = null; });
    return running;
  }

  if (can('post')) {
    const input = h('textarea', { id: 'chat-text', rows: '2', maxlength: '4000', placeholder: 'Write a message…' });
    const send = h('button', { id: 'chat-send', type: 'submit', class: 'primary' }, 'Send');
    const form = h('form', { id: 'chat-compose', class: 'dm-compose', novalidate: true },
      field('Message', input, 'Ctrl+Enter sends.'), h('div', { class: 'actions' }, send));
    const submit = async () => {
      clearError(error);
      const value = input.value;
      if (!value.trim()) { showError(error, 'Write something first.'); input.focus(); return; }
      try {
        const sent = await busy(send, () => post(`/chat/rooms/${encodeURIComponent(room)}/messages`, { text: value }));
        if (signal.aborted) return;
        input.value = '';
        if (sent) add([sent]);
        toBottom();
        input.focus();
      } catch (err) {
        if (!signal.aborted) showError(error, explain(err));
      }
    };
    form.addEventListener('submit', (ev) => { ev.preventDefault(); submit(); });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); submit(); }
    });
    panel.append(form);
  }

  await fetchNew(MAX_PAGES);
  if (signal.aborted) return;
  every(POLL_MS, () => { if (!document.hidden) fetchNew(5); }, signal);
}

export async function render(view, params) {
  const signal = leaving();
  view.append(pageHeader('Chat', 'Live rooms shared with other nodes.'));
  const room = text(params?.room);
  if (room) await renderRoom(view, room, signal);
  else await renderRooms(view, signal);
}
