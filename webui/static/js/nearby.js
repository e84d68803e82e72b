// #/nearby — nodes and mic modules on the LAN (mDNS), pairing, attached mic modules.
import { h, replace, shortId } from './dom.js';
import { get, post } from './api.js';
import { can } from './session.js';
import { leaving, every } from './router.js';
import { field, errorBox, showError, clearError, busy, pageHeader, section, badge, statusLine } from './ui.js';
import { micStateBadge } from './mic.js';

const REFRESH_MS = 3000;

/** "seen 4s ago" from a server timestamp (clamped: clocks may differ a little). */
function seenAgo(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return 'never seen';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `seen ${s}s ago`;
  const m = Math.round(s / 60);
  return m < 120 ? `seen ${m} min ago` : `seen ${Math.round(m / 60)} h ago`;
}

/**
 * Replace a refreshed list's rows without losing keyboard focus: the control
 * that had it (same row key, same class) gets it back in the new rows.
 */
function replaceKeepingFocus(list, rows) {
  const active = document.activeElement;
  const row = active && list.contains(active) ? active.closest('li') : null;
  const key = row ? row.dataset.id || row.dataset.serial || row.dataset.target : null;
  const cls = active?.classList?.[0];
  replace(list, rows);
  if (!key || !cls) return;
  for (const li of list.children) {
    if ((li.dataset.id || li.dataset.serial || li.dataset.target) !== key) continue;
    li.querySelector(`.${CSS.escape(cls)}`)?.focus({ preventScroll: true });
    return;
  }
}

const hostPort = (host, port) => (String(host).includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
const text = (v) => (typeof v === 'string' ? v : '');

/**
 * The pairing panel: Pair → code shown large → "Codes match" pins the peer.
 * Lives outside the refreshed list so a refresh never interrupts it.
 */
function pairingPanel(onPaired) {
  const title = h('h2', { id: 'pair-title' }, 'Pair');
  const code = h('p', { id: 'pair-code', class: 'pair-code', 'aria-live': 'polite' });
  const instruction = h('p', { id: 'pair-instruction' }, 'Check that the other node shows the same code.');
  const confirm = h('button', { id: 'pair-confirm', type: 'button', class: 'primary' }, 'Codes match');
  const cancel = h('button', { id: 'pair-cancel', type: 'button' }, 'Cancel');
  const error = errorBox('pair-error');
  const status = statusLine('pair-status');
  const checking = h('p', { class: 'muted', id: 'pair-checking' }, 'Checking the node’s key…');
  const codeBox = h('div', { id: 'pair-code-box', hidden: true },
    instruction, code, h('div', { class: 'actions' }, cancel, confirm));
  const panel = h('section', { id: 'pair-panel', class: 'card pair-panel', hidden: true, 'aria-labelledby': 'pair-title' },
    title, checking, codeBox, error, status);
  let current = null; // {node, code} of the pairing on screen
  let attempt = 0;

  function close() {
    attempt += 1;
    current = null;
    codeBox.hidden = true;
    checking.hidden = true;
  }

  function explain(err) {
    if (err?.code === 'key_mismatch') return 'This advertisement is not genuine: do not pair.';
    if (err?.code === 'code_mismatch') return 'The code differs: do not pair.';
    return err?.message || String(err);
  }

  async function start(n) {
    const mine = ++attempt;
    current = null;
    panel.hidden = false;
    codeBox.hidden = true;
    checking.hidden = false;
    clearError(error);
    status.textContent = '';
    title.textContent = `Pair with ${text(n.name) || shortId(n.node_id)}`;
    panel.scrollIntoView?.({ block: 'nearest' });
    try {
      const answer = await post(`/nearby/${encodeURIComponent(n.node_id)}/pair`, {});
      if (mine !== attempt) return;
      current = { node: n, code: String(answer?.code ?? '') };
      code.textContent = current.code;
      codeBox.hidden = false;
      confirm.focus();
    } catch (err) {
      if (mine !== attempt) return;
      showError(error, explain(err));
    } finally {
      if (mine === attempt) checking.hidden = true;
    }
  }

  confirm.addEventListener('click', async () => {
    if (!current) return;
    const { node: n, code: shown } = current;
    clearError(error);
    try {
      await busy(confirm, () => post(`/nearby/${encodeURIComponent(n.node_id)}/pair/confirm`, { code: shown }));
      close();
      status.textContent = `Paired with ${text(n.name) || shortId(n.node_id)}.`;
      onPaired();
    } catch (err) { showError(error, explain(err)); }
  });
  cancel.addEventListener('click', () => { close(); panel.hidden = true; });

  return { panel, start };
}

function nodeRow(n, pair) {
  const addresses = Array.isArray(n.addresses) ? n.addresses.map(String) : [];
  const where = addresses.length
    ? addresses.map((a) => (n.http_port ? hostPort(a, n.http_port) : a)).join(', ')
    : 'no address';
  const name = text(n.name) || 'Unnamed node';
  const li = h('li', { class: 'nearby-node card', dataset: { id: text(n.node_id) } },
    h('div', { class: 'peer-head' },
      h('strong', { class: 'nearby-name' }, name),
      n.paired ? badge('paired', 'state-online') : null,
      text(n.version) ? h('span', { class: 'muted small' }, `v${n.version}`) : null),
    h('dl', { class: 'kv' },
      h('dt', {}, 'Node'), h('dd', { class: 'mono', title: text(n.node_id) }, shortId(n.node_id)),
      h('dt', {}, 'Address'), h('dd', { class: 'mono nearby-address' }, where),
      h('dt', {}, 'Seen'), h('dd', { class: 'nearby-seen' }, seenAgo(n.last_seen_ms))));
  if (pair && !n.paired) {
    if (n.p2p_port && addresses.length) {
      const button = h('button', { type: 'button', class: 'nearby-pair small' }, 'Pair');
      button.addEventListener('click', () => pair(n));
      li.append(h('div', { class: 'actions' }, button));
    } else {
      li.append(h('p', { class: 'muted small' }, 'This node does not accept peer links.'));
    }
  }
  return li;
}

function advertisedMicRow(m, attachedTargets, attach) {
  const addresses = Array.isArray(m.addresses) ? m.addresses.map(String) : [];
  const target = addresses.length && m.port ? `tcp://${hostPort(addresses[0], m.port)}` : '';
  const li = h('li', { class: 'nearby-mic card', dataset: { serial: text(m.serial) } },
    h('div', { class: 'peer-head' },
      h('strong', {}, text(m.model) || 'Mic module'),
      h('span', { class: 'mono' }, text(m.serial)),
      attachedTargets.has(target) ? badge('attached', 'state-online') : null),
    h('p', { class: 'mono small nearby-mic-target' }, target || 'no address'),
    text(m.firmware) ? h('p', { class: 'muted small' }, `Firmware ${m.firmware} · ${seenAgo(m.last_seen_ms)}`) : null);
  if (attach && target && !attachedTargets.has(target)) {
    const button = h('button', { type: 'button', class: 'nearby-mic-attach small' }, 'Attach');
    button.addEventListener('click', () => attach(target, button));
    li.append(h('div', { class: 'actions' }, button));
  }
  return li;
}

function attachedMicRow(m) {
  const serial = text(m.serial);
  const model = text(m.info?.model);
  const heading = serial
    ? h('a', { class: 'mic-link', href: `#/mic/${encodeURIComponent(serial)}` }, model ? `${model} ${serial}` : serial)
    : h('span', {}, model || 'Not identified yet');
  return h('li', { class: 'mic card', dataset: { serial, target: text(m.target) } },
    h('div', { class: 'peer-head' }, h('strong', {}, heading), micStateBadge(m.online)),
    h('p', { class: 'mono small mic-target' }, text(m.target)),
    !m.online && m.last_error ? h('p', { class: 'error-text small mic-last-error' }, String(m.last_error)) : null);
}

export async function render(view) {
  const signal = leaving();
  view.append(pageHeader('Nearby', 'Nodes and mic modules on your local network, and the modules attached to this node.'));
  const off = h('p', { id: 'nearby-off', class: 'card notice', hidden: true },
    'Discovery is off on this node, so it does not look for nodes or modules on the local network. '
    + 'Start it without --no-discovery to see them here.');
  const nearbyError = errorBox('nearby-error');
  const nodeList = h('ul', { id: 'nearby-nodes', class: 'peer-list' });
  const micAdsList = h('ul', { id: 'nearby-mics', class: 'peer-list' });
  const micError = errorBox('mic-error');
  const micList = h('ul', { id: 'mic-list', class: 'peer-list' });
  const micListError = errorBox('mic-list-error');
  const hardware = can('hardware');
  let attachedTargets = new Set();
  let lastNearby = null;

  const pairing = can('manage_peers') ? pairingPanel(() => refresh()) : null;

  async function attach(target, button) {
    clearError(micError);
    try {
      const mic = await busy(button, () => post('/mics', { target }));
      if (!mic?.online && mic?.last_error) showError(micError, `Attached, but the module does not answer yet: ${mic.last_error}`);
      await refresh();
      return true;
    } catch (err) {
      showError(micError, err);
      return false;
    }
  }

  function renderNearby(data) {
    const nodes = Array.isArray(data?.nodes) ? data.nodes : [];
    const mics = Array.isArray(data?.mics) ? data.mics : [];
    off.hidden = data?.discovery !== false;
    replaceKeepingFocus(nodeList, nodes.length ? nodes.map((n) => nodeRow(n, pairing?.start))
      : h('li', { class: 'muted empty' }, data?.discovery === false ? 'Discovery is off.' : 'No other node seen yet.'));
    replaceKeepingFocus(micAdsList, mics.length ? mics.map((m) => advertisedMicRow(m, attachedTargets, hardware ? attach : null))
      : h('li', { class: 'muted empty' }, data?.discovery === false ? 'Discovery is off.' : 'No mic module advertised.'));
  }

  async function loadNearby() {
    try {
      lastNearby = await get('/nearby');
      if (signal.aborted) return;
      clearError(nearbyError);
      renderNearby(lastNearby);
    } catch (err) { if (!signal.aborted) showError(nearbyError, err); }
  }

  async function loadMics() {
    try {
      const items = (await get('/mics'))?.items || [];
      if (signal.aborted) return;
      clearError(micListError);
      attachedTargets = new Set(items.map((m) => text(m.target)));
      replaceKeepingFocus(micList, items.length ? items.map(attachedMicRow)
        : h('li', { class: 'muted empty' }, 'No mic module attached.'));
      if (lastNearby) renderNearby(lastNearby); // the "attached" marks follow
    } catch (err) { if (!signal.aborted) showError(micListError, err); }
  }

  let refreshing = null;
  function refresh() {
    // One refresh at a time: a slow node must not pile up requests.
    if (!refreshing) refreshing = Promise.all([loadMics(), loadNearby()]).finally(() => { refreshing = null; });
    return refreshing;
  }

  let attachForm = null;
  if (hardware) {
    const target = h('input', {
      id: 'mic-target', required: true, placeholder: '/dev/ttyACM0 or tcp://host:port',
      autocapitalize: 'none', spellcheck: 'false', autocomplete: 'off',
    });
    const submit = h('button', { id: 'mic-attach', type: 'submit', class: 'primary' }, 'Attach');
    attachForm = h('form', { id: 'mic-attach-form', class: 'inline attach-form', novalidate: true },
      field('Attach a module', target, 'A serial device path, or tcp://HOST:PORT for a networked module.'),
      submit);
    attachForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const value = target.value.trim();
      if (!value) { showError(micError, 'Enter a device path or tcp://HOST:PORT.'); target.focus(); return; }
      if (!value.startsWith('/') && !/^tcp:\/\/.+:\d{1,5}$/.test(value)) {
        showError(micError, 'A target is a device path (/dev/ttyACM0) or tcp://HOST:PORT.');
        target.focus();
        return;
      }
      if (await attach(value, submit)) target.value = '';
    });
  }

  view.append(
    off,
    pairing ? pairing.panel : null,
    section('Nodes nearby', nearbyError, nodeList),
    section('Mic modules on the network', micAdsList),
    section('Attached mic modules', attachForm, micError, micListError, micList));

  await refresh();
  every(REFRESH_MS, () => { if (!document.hidden) refresh(); }, signal);
}
