// #/peers — federation: configured peers, live links, followed authors, blocks.
import { h, replace, timeEl, shortId } from './dom.js';
import { get, post, del } from './api.js';
import { can } from './session.js';
import { field, select, errorBox, showError, clearError, busy, pageHeader, section, badge, authorLink } from './ui.js';

const HEX64 = '[0-9a-f]{64}';

function peerRow(p, reload, errorEl) {
  const lastSeen = p.last_seen_ms ?? p.last_seen; // the draft contract says last_seen
  const li = h('li', { class: 'peer card', dataset: { address: p.address } },
    h('div', { class: 'peer-head' },
      h('strong', { class: 'peer-address mono' }, p.address),
      badge(p.state || 'unknown', `state-${String(p.state || 'unknown').replace(/[^a-z_-]/gi, '')}`)),
    h('dl', { class: 'kv' },
      p.node_id ? [h('dt', {}, 'Node'), h('dd', { class: 'mono', title: p.node_id }, shortId(p.node_id))] : null,
      p.pinned_id ? [h('dt', {}, 'Pinned'), h('dd', { class: 'mono', title: p.pinned_id }, shortId(p.pinned_id))] : null,
      [h('dt', {}, 'Last seen'), h('dd', {}, typeof lastSeen === 'number' ? timeEl(lastSeen) : 'never')],
      p.lag !== null && p.lag !== undefined ? [h('dt', {}, 'Lag'), h('dd', {}, `${p.lag} events`)] : null,
      p.last_error ? [h('dt', {}, 'Last error'), h('dd', { class: 'error-text' }, String(p.last_error))] : null));
  if (can('manage_peers')) {
    const remove = h('button', { type: 'button', class: 'small danger peer-remove' }, 'Remove');
    remove.addEventListener('click', async () => {
      if (!window.confirm(`Stop federating with ${p.address}?`)) return;
      clearError(errorEl);
      try {
        await busy(remove, () => del('/peers', { address: p.address }));
        reload();
      } catch (err) { showError(errorEl, err); }
    });
    li.append(h('div', { class: 'actions' }, remove));
  }
  return li;
}

/** Live links have no fixed schema in the contract: show the known fields. */
function linkRow(link) {
  const l = link && typeof link === 'object' ? link : { address: String(link) };
  const fields = [['address', 'Address'], ['node_id', 'Node'], ['direction', 'Direction'], ['lag', 'Lag'],
    ['events_sent', 'Sent'], ['events_received', 'Received'], ['events_accepted', 'Accepted'],
    ['invalid_events', 'Invalid']];
  return h('li', { class: 'link card' }, h('dl', { class: 'kv' }, fields
    .filter(([k]) => l[k] !== undefined && l[k] !== null)
    .map(([k, label]) => [h('dt', {}, label), h('dd', { class: k === 'node_id' ? 'mono' : null },
      k === 'node_id' ? shortId(String(l[k])) : String(l[k]))])));
}

function peerForm(reload) {
  const address = h('input', {
    id: 'peer-address', required: true, placeholder: 'ws://host:8766', autocapitalize: 'none', spellcheck: 'false', inputmode: 'url',
  });
  const nodeId = h('input', { id: 'peer-node-id', pattern: HEX64, spellcheck: 'false', autocapitalize: 'none' });
  const submit = h('button', { id: 'peer-submit', type: 'submit', class: 'primary' }, 'Add peer');
  const error = errorBox('peer-error');
  const form = h('form', { id: 'peer-form', class: 'card', novalidate: true },
    h('h2', {}, 'Add a peer'),
    field('Address', address, 'ws://HOST:PORT, optionally #NODEID to pin its key.'),
    field('Node id (optional)', nodeId, '64 hex characters; refuses any other node at that address.'),
    error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const body = { address: address.value.trim() };
    const pin = nodeId.value.trim().toLowerCase();
    if (!body.address) { showError(error, 'Enter the peer address.'); return; }
    if (pin && !new RegExp(`^${HEX64}$`).test(pin)) { showError(error, 'A node id is 64 hex characters.'); return; }
    if (pin) body.node_id = pin;
    try {
      await busy(submit, () => post('/peers', body));
      form.reset();
      reload();
    } catch (err) { showError(error, err); }
  });
  return form;
}

function followForm(reload) {
  const author = h('input', { id: 'follow-author', required: true, pattern: HEX64, spellcheck: 'false', autocapitalize: 'none' });
  const submit = h('button', { id: 'follow-submit', type: 'submit', class: 'primary' }, 'Follow');
  const error = errorBox('follow-error');
  const form = h('form', { id: 'follow-form', class: 'inline-form', novalidate: true },
    field('Author id to follow', author, '64 hex characters.'), error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const id = author.value.trim().toLowerCase();
    if (!new RegExp(`^${HEX64}$`).test(id)) { showError(error, 'An author id is 64 hex characters.'); return; }
    try {
      await busy(submit, () => post('/follows', { author: id }));
      form.reset();
      reload();
    } catch (err) { showError(error, err); }
  });
  return form;
}

const BLOCK_KINDS = [['author', 'Author'], ['node', 'Node']];

function blockRow(b, reload, errorEl) {
  const target = String(b?.target ?? '');
  const what = b?.what === 'node' ? 'node' : 'author';
  const label = what === 'author'
    ? h('a', { class: 'block-target mono break', href: `#/author/${encodeURIComponent(target)}` }, target)
    : h('span', { class: 'block-target mono break' }, target);
  const li = h('li', { class: 'block', dataset: { target, what } },
    h('span', { class: 'block-label' }, badge(what, 'what'), ' ', label));
  const remove = h('button', { type: 'button', class: 'small block-remove' }, 'Unblock');
  remove.addEventListener('click', async () => {
    clearError(errorEl);
    try {
      await busy(remove, () => del(`/blocks/${encodeURIComponent(target)}`));
      reload();
    } catch (err) { showError(errorEl, err); }
  });
  li.append(remove);
  return li;
}

function blockForm(reload) {
  const target = h('input', { id: 'block-target', required: true, pattern: HEX64, spellcheck: 'false', autocapitalize: 'none', autocomplete: 'off' });
  const what = select({ id: 'block-what' }, BLOCK_KINDS, 'author');
  const submit = h('button', { id: 'block-submit', type: 'submit', class: 'danger' }, 'Block');
  const error = errorBox('block-error');
  const form = h('form', { id: 'block-form', class: 'inline-form', novalidate: true },
    field('Id to block', target, 'An author id or a node id: 64 hex characters.'),
    field('Kind', what),
    error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const id = target.value.trim().toLowerCase();
    if (!new RegExp(`^${HEX64}$`).test(id)) { showError(error, 'An id is 64 hex characters.'); target.focus(); return; }
    try {
      await busy(submit, () => post('/blocks', { target: id, what: what.value === 'node' ? 'node' : 'author' }));
      form.reset();
      what.value = 'author';
      await reload();
    } catch (err) { showError(error, err); }
  });
  return form;
}

export async function render(view) {
  view.append(pageHeader('Peers', 'Nodes this node federates with, and the authors it follows.'));
  const peerError = errorBox('peers-error');
  const peerList = h('ul', { id: 'peer-list', class: 'peer-list' });
  const linkList = h('ul', { id: 'link-list', class: 'link-list' });
  const followError = errorBox('follows-error');
  const followList = h('ul', { id: 'follow-list', class: 'follow-list' });

  async function loadPeers() {
    clearError(peerError);
    try {
      const data = await get('/peers');
      const peers = data?.peers || [];
      const links = data?.links || [];
      replace(peerList, peers.length ? peers.map((p) => peerRow(p, loadPeers, peerError))
        : h('li', { class: 'muted' }, 'No peers yet.'));
      replace(linkList, links.length ? links.map(linkRow) : h('li', { class: 'muted' }, 'No live connections.'));
    } catch (err) { showError(peerError, err); }
  }

  async function loadFollows() {
    clearError(followError);
    try {
      const follows = (await get('/follows'))?.follows || [];
      replace(followList, follows.length ? follows.map((id) => {
        const link = authorLink(id, null);
        const li = h('li', { class: 'follow' }, link);
        // Put a name on the id when this node knows one (best effort).
        get(`/authors/${encodeURIComponent(id)}`)
          .then((a) => { if (a?.name) link.textContent = a.name; })
          .catch(() => {});
        if (can('post')) {
          const un = h('button', { type: 'button', class: 'small follow-remove' }, 'Unfollow');
          un.addEventListener('click', async () => {
            try {
              await busy(un, () => del(`/follows/${encodeURIComponent(id)}`));
              loadFollows();
            } catch (err) { showError(followError, err); }
          });
          li.append(un);
        }
        return li;
      }) : h('li', { class: 'muted' }, 'Not following anyone yet.'));
    } catch (err) { showError(followError, err); }
  }

  const blockError = errorBox('blocks-error');
  const blockList = h('ul', { id: 'block-list', class: 'block-list' });

  async function loadBlocks() {
    clearError(blockError);
    try {
      const items = (await get('/blocks'))?.items || [];
      replace(blockList, items.length ? items.map((b) => blockRow(b, loadBlocks, blockError))
        : h('li', { class: 'muted empty' }, 'Nothing is blocked.'));
    } catch (err) { showError(blockError, err); }
  }

  const manage = can('manage_peers');
  if (manage) view.append(peerForm(loadPeers));
  view.append(
    section('Peers', peerError, peerList),
    section('Live links', linkList),
    section('Following', can('post') ? followForm(loadFollows) : null, followError, followList));
  if (manage) {
    view.append(section('Blocked',
      h('p', { class: 'muted' }, 'This node stops taking in content from blocked authors and no longer talks to blocked nodes.'),
      blockForm(loadBlocks), blockError, blockList));
  }
  await Promise.all([loadPeers(), loadFollows(), manage ? loadBlocks() : null]);
}
