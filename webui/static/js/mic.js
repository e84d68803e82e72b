// #/mic/<serial> — one attached mic module: state, identity, live meters,
// controls, self-test and its hardware passport.
import { h, replace, timeEl, fmtDate } from './dom.js';
import { get, post, patch, del } from './api.js';
import { can } from './session.js';
import { navigate, leaving, every } from './router.js';
import {
  field, checkField, select, errorBox, showError, clearError, busy, section, badge, statusLine, authorLink,
} from './ui.js';

const METER_FLOOR = -60; // dBFS at the left end of a meter bar
const OFFLINE_POLL_MS = 3000;
const STREAM_RETRY_MS = 5000;

export const PATTERNS = [['cardioid', 'Cardioid'], ['supercardioid', 'Supercardioid'], ['omni', 'Omnidirectional'],
  ['figure8', 'Figure 8']];
export const LOW_CUTS = [['0', 'Off'], ['80', '80 Hz'], ['160', '160 Hz']];
export const REPAIR_ACTIONS = [['part-swapped', 'Part swapped'], ['firmware-updated', 'Firmware updated'],
  ['repaired', 'Repaired'], ['inspected', 'Inspected'], ['transferred', 'Transferred']];
const SLOTS = [['capsule', 'Capsule'], ['preamp', 'Preamp'], ['body', 'Body'], ['firmware', 'Firmware']];

const text = (v) => (typeof v === 'string' ? v : v === null || v === undefined ? '' : String(v));
const labelOf = (pairs, value) => (pairs.find(([v]) => v === String(value)) || [null, text(value)])[1];
const kv = (rows) => h('dl', { class: 'kv' }, rows.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));

/** The online/offline pill shared with the Nearby page. */
export function micStateBadge(online, id) {
  const state = online ? 'online' : 'offline';
  return h('span', { id, class: `badge mic-state badge-state-${state}` }, state);
}

function setStateBadge(el, online) {
  const state = online ? 'online' : 'offline';
  el.textContent = state;
  el.className = `badge mic-state badge-state-${state}`;
}

const dbText = (v) => (typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(1)} dBFS` : '–');
const barWidth = (v) => {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '0%';
  const f = Math.min(1, Math.max(0, (v - METER_FLOOR) / -METER_FLOOR));
  return `${(f * 100).toFixed(1)}%`;
};

/** Level meters: one bar per channel, updated in place (they change ten times a second). */
function meters() {
  const box = h('div', { id: 'mic-meters', class: 'meters', 'aria-label': 'Level meters' });
  const muted = h('p', { class: 'muted small meters-muted', hidden: true }, 'Muted: the module sends silence.');
  const idle = h('p', { class: 'muted small meters-idle' }, 'Waiting for levels…');
  let rows = [];

  function build(count) {
    rows = Array.from({ length: count }, (_, i) => {
      const rms = h('div', { class: 'meter-rms' });
      const peak = h('div', { class: 'meter-fill' });
      const bar = h('div', {
        class: 'meter-bar', role: 'meter', 'aria-valuemin': String(METER_FLOOR), 'aria-valuemax': '0',
        'aria-label': `Channel ${i + 1} peak level`,
      }, peak, rms);
      const value = h('span', { class: 'meter-peak' }, '–');
      return { el: h('div', { class: 'meter' }, h('span', { class: 'meter-label' }, `Ch ${i + 1}`), bar, value), bar, peak, rms, value };
    });
    replace(box, rows.map((r) => r.el));
  }

  /** `levels` is a LevelReport or null; `why` says why there are none. */
  function update(levels, why) {
    const channels = Array.isArray(levels?.channels) ? levels.channels : [];
    idle.hidden = channels.length > 0;
    if (why) idle.textContent = why;
    muted.hidden = !levels?.muted;
    if (!channels.length) {
      for (const r of rows) {
        r.peak.style.width = '0%';
        r.rms.style.width = '0%';
        r.value.textContent = '–';
        r.el.classList.remove('clip');
      }
      return;
    }
    if (channels.length !== rows.length) build(channels.length);
    channels.forEach((c, i) => {
      const r = rows[i];
      const peak = Number(c?.peak_dbfs);
      const rms = Number(c?.rms_dbfs);
      r.peak.style.width = barWidth(peak);
      r.rms.style.width = barWidth(rms);
      r.bar.setAttribute('aria-valuenow', Number.isFinite(peak) ? String(Math.max(METER_FLOOR, peak)) : String(METER_FLOOR));
      r.bar.setAttribute('aria-valuetext', dbText(peak));
      r.value.textContent = `peak ${dbText(peak)} · RMS ${dbText(rms)}`;
      r.el.classList.toggle('clip', Number.isFinite(peak) && peak > -1);
    });
  }

  return { el: h('div', {}, box, idle, muted), update };
}

function partsTable(parts) {
  const list = Array.isArray(parts) ? parts : [];
  if (!list.length) return h('p', { id: 'mic-parts', class: 'muted' }, 'The module lists no parts.');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'mic-parts', class: 'parts' },
    h('caption', { class: 'visually-hidden' }, 'Parts inventory'),
    h('thead', {}, h('tr', {}, ['Slot', 'Model', 'Serial', 'Revision'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, list.map((p) => h('tr', { class: 'part', dataset: { slot: text(p?.slot) } },
      h('td', { dataset: { label: 'Slot' } }, labelOf(SLOTS, p?.slot)),
      h('td', { dataset: { label: 'Model' } }, text(p?.model)),
      h('td', { class: 'mono', dataset: { label: 'Serial' } }, text(p?.serial)),
      h('td', { dataset: { label: 'Revision' } }, text(p?.revision)))))));
}

function partText(p) {
  if (!p || typeof p !== 'object') return '';
  return [labelOf(SLOTS, p.slot), text(p.model), p.serial ? `(${text(p.serial)})` : '', p.revision ? `rev ${text(p.revision)}` : '']
    .filter(Boolean).join(' ');
}

/** When the work was done: `when` for repairs, `created` otherwise (as node/passport.py). */
const entryTime = (item) => (Number.isInteger(item?.body?.when) ? item.body.when : item?.created);

function passportEntry(item) {
  const b = item?.body && typeof item.body === 'object' ? item.body : {};
  const hardware = item?.kind === 'hardware';
  const title = hardware ? 'Registered' : labelOf(REPAIR_ACTIONS, b.action) || 'Repair';
  const rows = hardware
    ? [
      ['Model', text(b.model)],
      b.firmware ? ['Firmware', text(b.firmware)] : null,
      Array.isArray(b.parts) && b.parts.length
        ? ['Parts', h('ul', { class: 'plain' }, b.parts.map((p) => h('li', {}, partText(p))))] : null,
    ]
    : [
      b.removed ? ['Removed', partText(b.removed)] : null,
      b.installed ? ['Installed', partText(b.installed)] : null,
      b.firmware_from || b.firmware_to ? ['Firmware', `${text(b.firmware_from) || '?'} → ${text(b.firmware_to) || '?'}`] : null,
      b.by ? ['By', text(b.by)] : null,
    ];
  if (b.notes) rows.push(['Notes', h('span', { class: 'pre' }, text(b.notes))]);
  return h('li', { class: `passport-entry passport-${hardware ? 'hardware' : 'repair'}`, dataset: { kind: text(item?.kind), id: text(item?.id) } },
    h('div', { class: 'meta' },
      h('strong', { class: 'passport-title' }, title),
      h('span', { class: 'sep', 'aria-hidden': 'true' }, '·'),
      timeEl(entryTime(item)),
      h('span', { class: 'sep', 'aria-hidden': 'true' }, '·'),
      h('span', {}, 'signed by ', authorLink(item?.author, item?.author_name)),
      item?.local === false ? badge('federated', 'remote') : null),
    kv(rows));
}

function selfTestResult(box, result, when) {
  if (!result || typeof result !== 'object') { replace(box); return; }
  const checks = Array.isArray(result.checks) ? result.checks : [];
  replace(box,
    h('p', { class: `selftest-verdict ${result.passed ? 'ok-text' : 'error-text'}` },
      h('strong', {}, result.passed ? 'Self-test passed' : 'Self-test failed'), when ? ` (${when})` : ''),
    h('ul', { class: 'plain selftest-checks' }, checks.map((c) => h('li', { class: 'selftest-check', dataset: { slot: text(c?.slot), status: text(c?.status) } },
      badge(text(c?.status) || '?', c?.status === 'pass' ? 'state-online' : 'state-failed'), ' ',
      labelOf(SLOTS, c?.slot),
      c?.detail ? h('span', { class: 'muted' }, ` — ${text(c.detail)}`) : null,
      c?.code ? h('span', { class: 'muted mono' }, ` (0x${Number(c.code).toString(16).padStart(4, '0')})`) : null))));
}

/** Settings controls; each change sends only that field and takes the module's answer. */
function controls(serial, onSettings) {
  const gain = h('input', { id: 'mic-gain', type: 'range', min: '0', max: '60', step: '0.5', value: '0' });
  const gainValue = h('output', { id: 'mic-gain-value', for: 'mic-gain', class: 'gain-value' }, '– dB');
  const pattern = select({ id: 'mic-pattern' }, PATTERNS, null);
  const phantom = h('input', { id: 'mic-phantom', type: 'checkbox' });
  const lowcut = select({ id: 'mic-lowcut' }, LOW_CUTS, null);
  const mute = h('input', { id: 'mic-mute', type: 'checkbox' });
  const error = errorBox('mic-control-error');
  const all = [gain, pattern, phantom, lowcut, mute];
  let settings = null;
  const pending = new Map(); // field -> sequence number of the latest request

  const showGain = (v) => { gainValue.textContent = Number.isFinite(v) ? `${v.toFixed(1)} dB` : '– dB'; };

  function apply(s, skip) {
    if (!s || typeof s !== 'object') return;
    settings = s;
    // A control whose own change is still on its way keeps what the user chose.
    if (skip !== 'gain_db' && !pending.has('gain_db')) { gain.value = String(s.gain_db); showGain(Number(s.gain_db)); }
    if (skip !== 'pattern' && !pending.has('pattern')) pattern.value = text(s.pattern);
    if (skip !== 'phantom' && !pending.has('phantom')) phantom.checked = Boolean(s.phantom);
    if (skip !== 'low_cut_hz' && !pending.has('low_cut_hz')) lowcut.value = String(s.low_cut_hz);
    if (skip !== 'mute' && !pending.has('mute')) mute.checked = Boolean(s.mute);
  }

  async function send(name, value) {
    const seq = (pending.get(name) || 0) + 1;
    pending.set(name, seq);
    clearError(error);
    try {
      const answer = await patch(`/mics/${encodeURIComponent(serial)}`, { [name]: value });
      if (pending.get(name) !== seq) return; // a newer change of this control is on its way
      pending.delete(name);
      apply(answer);
      onSettings(answer);
    } catch (err) {
      if (pending.get(name) !== seq) return;
      pending.delete(name);
      showError(error, err);
      apply(settings); // back to what the module last said
    }
  }

  gain.addEventListener('input', () => showGain(Number(gain.value)));
  gain.addEventListener('change', () => send('gain_db', Number(gain.value)));
  pattern.addEventListener('change', () => send('pattern', pattern.value));
  phantom.addEventListener('change', () => send('phantom', phantom.checked));
  lowcut.addEventListener('change', () => send('low_cut_hz', Number(lowcut.value)));
  mute.addEventListener('change', () => send('mute', mute.checked));

  const el = h('div', { id: 'mic-controls', class: 'mic-controls' },
    h('div', { class: 'field gain-field' },
      h('label', { for: 'mic-gain' }, 'Gain ', gainValue),
      gain),
    h('div', { class: 'row' }, field('Polar pattern', pattern), field('Low cut', lowcut)),
    h('div', { class: 'row' },
      checkField('Phantom power', phantom),
      checkField('Mute', mute)),
    error);
  return {
    el,
    apply,
    setEnabled(on) { for (const c of all) c.disabled = !on; },
  };
}

function readOnlySettings() {
  const box = h('div', { id: 'mic-settings' });
  return {
    el: box,
    apply(s) {
      if (!s || typeof s !== 'object') return;
      replace(box, kv([
        ['Gain', `${Number(s.gain_db).toFixed(1)} dB`],
        ['Polar pattern', labelOf(PATTERNS, s.pattern)],
        ['Phantom power', s.phantom ? 'on' : 'off'],
        ['Low cut', labelOf(LOW_CUTS, s.low_cut_hz)],
        ['Mute', s.mute ? 'on' : 'off'],
      ]));
    },
    setEnabled() {},
  };
}

function repairForm(serial, onRecorded) {
  const action = select({ id: 'repair-action' }, REPAIR_ACTIONS, 'repaired');
  const notes = h('textarea', { id: 'repair-notes', rows: '3', maxlength: '5000' });
  const submit = h('button', { id: 'repair-submit', type: 'submit', class: 'primary' }, 'Record');
  const error = errorBox('repair-error');
  const form = h('form', { id: 'repair-form', class: 'repair-form', novalidate: true },
    h('h3', {}, 'Record work on this module'),
    field('What was done', action),
    field('Notes', notes, 'Optional: what you found, which part, who did it.'),
    error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const body = { action: action.value };
    if (notes.value.trim()) body.notes = notes.value;
    if (Array.from(notes.value).length > 5000) { showError(error, 'Notes are at most 5000 characters.'); return; }
    try {
      await busy(submit, () => post(`/mics/${encodeURIComponent(serial)}/passport`, body));
      notes.value = '';
      await onRecorded();
    } catch (err) { showError(error, err); }
  });
  return form;
}

export async function render(view, { serial }) {
  const signal = leaving();
  const path = `/mics/${encodeURIComponent(serial)}`;
  const heading = h('h1', { id: 'mic-heading', tabindex: '-1' }, serial);
  const stateBadge = micStateBadge(false, 'mic-online');
  stateBadge.textContent = '…';
  const lastError = h('p', { id: 'mic-last-error', class: 'error-text', hidden: true });
  const pageError = errorBox('mic-page-error');
  view.append(
    h('p', {}, h('a', { href: '#/nearby', class: 'back' }, '← Nearby')),
    h('header', { class: 'page-header mic-header' }, heading, stateBadge),
    lastError, pageError);

  let mic;
  try {
    mic = await get(path);
  } catch (err) {
    if (signal.aborted) return;
    stateBadge.hidden = true;
    showError(pageError, err.status === 404 ? `No mic module ${serial} is attached to this node.` : err);
    return;
  }
  if (signal.aborted) return;

  const hardware = can('hardware');
  const identity = h('div', { id: 'mic-identity' });
  const meter = meters();
  const settings = hardware ? controls(serial, (s) => { mic.settings = s; }) : readOnlySettings();
  const status = statusLine('mic-status');
  const selfTestBox = h('div', { id: 'mic-selftest-result', 'aria-live': 'polite' });
  const passportList = h('ol', { id: 'mic-passport', class: 'passport' });
  const passportError = errorBox('mic-passport-error');
  const actionError = errorBox('mic-action-error');
  const buttons = [];

  function showMic(m) {
    mic = m;
    const info = m.info && typeof m.info === 'object' ? m.info : {};
    replace(heading, text(info.model) ? `${info.model} ` : '', h('span', { class: 'mono mic-serial' }, text(m.serial) || serial));
    document.title = `${text(info.model) || 'Mic'} ${text(m.serial) || serial} · Talas`;
    setStateBadge(stateBadge, m.online);
    lastError.hidden = m.online || !m.last_error;
    lastError.textContent = m.online || !m.last_error ? '' : `Offline: ${m.last_error}`;
    replace(identity,
      kv([
        ['Model', text(info.model) || '–'],
        ['Serial', h('span', { class: 'mono' }, text(m.serial) || serial)],
        ['Firmware', text(info.firmware) || '–'],
        info.channels ? ['Channels', String(info.channels)] : null,
        ['Connection', h('span', { class: 'mono break' }, text(m.target))],
        ['Attached', [text(m.attached_by), m.attached ? ` · ${fmtDate(m.attached)}` : '']],
        ['Last seen', typeof m.last_seen === 'number' ? timeEl(m.last_seen) : 'never'],
      ]),
      h('h3', {}, 'Parts'),
      partsTable(info.parts));
    settings.apply(m.settings);
    settings.setEnabled(Boolean(m.online));
    for (const b of buttons) b.disabled = !m.online;
    if (!m.online) meter.update(null, 'No levels: the module is offline.');
  }

  async function reloadMic() {
    try {
      const m = await get(path);
      if (!signal.aborted) { clearError(pageError); showMic(m); }
    } catch (err) {
      if (signal.aborted) return;
      showError(pageError, err.status === 404 ? 'This module is no longer attached to this node.' : err);
    }
  }

  async function loadPassport() {
    try {
      const items = (await get(`${path}/passport`))?.items || [];
      if (signal.aborted) return;
      clearError(passportError);
      const sorted = [...items].sort((a, b) => (entryTime(a) ?? 0) - (entryTime(b) ?? 0));
      replace(passportList, sorted.length ? sorted.map(passportEntry)
        : h('li', { class: 'muted empty' }, 'No passport entries yet.'));
    } catch (err) { if (!signal.aborted) showError(passportError, err); }
  }

  let actions = null;
  if (hardware) {
    const identify = h('button', { id: 'mic-identify', type: 'button' }, 'Identify');
    const selfTest = h('button', { id: 'mic-selftest', type: 'button' }, 'Self-test');
    const detach = h('button', { id: 'mic-detach', type: 'button', class: 'danger' }, 'Detach');
    buttons.push(identify, selfTest);
    identify.addEventListener('click', async () => {
      clearError(actionError);
      status.textContent = '';
      try {
        await busy(identify, () => post(`${path}/identify`, { seconds: 5 }));
        status.textContent = 'The module’s light blinks for 5 seconds.';
      } catch (err) { showError(actionError, err); }
      identify.disabled = !mic.online;
    });
    selfTest.addEventListener('click', async () => {
      clearError(actionError);
      status.textContent = '';
      replace(selfTestBox, h('p', { class: 'muted' }, 'Testing…'));
      try {
        const result = await busy(selfTest, () => post(`${path}/self-test`, {}));
        if (signal.aborted) return;
        selfTestResult(selfTestBox, result, 'just now');
      } catch (err) {
        replace(selfTestBox);
        showError(actionError, err);
      }
      selfTest.disabled = !mic.online;
    });
    detach.addEventListener('click', async () => {
      if (!window.confirm(`Detach ${text(mic.serial) || serial}? Its passport stays.`)) return;
      clearError(actionError);
      try {
        await busy(detach, () => del(path));
        navigate('/nearby');
      } catch (err) { showError(actionError, err); }
    });
    actions = h('div', { class: 'actions' }, identify, selfTest, detach);
  }

  view.append(
    section('Levels', meter.el),
    section('Settings', settings.el, actions, actionError, status, selfTestBox),
    section('Module', identity),
    section('Passport',
      h('p', { class: 'muted' }, 'Every registration and repair of this module, oldest first. It follows the module to its next owner.'),
      passportError, passportList,
      hardware ? repairForm(serial, loadPassport) : null));

  showMic(mic);
  if (mic.self_test) selfTestResult(selfTestBox, mic.self_test, 'last run');
  await loadPassport();
  if (signal.aborted) return;

  // Live levels (server-sent events); the stream also tells when the module
  // goes on- or offline, then the details (last error, settings) are fetched.
  let stream = null;
  let retry = null;
  function openStream() {
    if (signal.aborted) return;
    stream = new EventSource(`/api/v1${path}/levels`);
    stream.addEventListener('message', (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }
      if (Boolean(data?.online) !== Boolean(mic.online)) {
        mic.online = Boolean(data?.online);
        setStateBadge(stateBadge, mic.online);
        settings.setEnabled(mic.online);
        for (const b of buttons) b.disabled = !mic.online;
        reloadMic();
      }
      meter.update(data?.online ? data.levels : null,
        data?.online ? 'Waiting for levels…' : 'No levels: the module is offline.');
    });
    stream.addEventListener('error', () => {
      // EventSource retries by itself unless the answer was an error (e.g. 404).
      if (stream.readyState !== EventSource.CLOSED) return;
      stream = null;
      meter.update(null, 'No live levels: reconnecting…');
      reloadMic();
      retry = setTimeout(openStream, STREAM_RETRY_MS);
    });
  }
  signal.addEventListener('abort', () => {
    stream?.close();
    stream = null;
    clearTimeout(retry);
  }, { once: true });
  openStream();

  // While offline the supervisor keeps retrying: show its latest error.
  every(OFFLINE_POLL_MS, () => { if (!mic.online && !document.hidden) reloadMic(); }, signal);
}
