// #/jam and #/jam/<id> — jam sessions: play together, live, with other nodes.
//
// A jam is hosted by one node; other nodes join it by its code
// "<host node id>/<jam id>" (node/live/jam.py). The browser takes part through
// its own node only: one WebRTC peer connection whose offer and answer travel
// over the live WebSocket (webui/jam_api.py). The offer has SLOTS audio
// transceivers: the first sends the microphone and receives, the others only
// receive. Transceiver i's receiver is "slot i"; the node's roster says which
// participant is on which slot. Nothing here trusts names or titles: they are
// always inserted as text (dom.js).
import { h, replace, shortId, fmtDate } from './dom.js';
import { get, post, del } from './api.js';
import { can } from './session.js';
import { leaving, every } from './router.js';
import { field, errorBox, showError, clearError, busy, pageHeader, statusLine, badge } from './ui.js';

const POLL_MS = 2000;
const STALE_MS = 8000; // a read of the jam still unanswered after this no longer holds back the next
const SLOTS = 8; // node/live/jam.py SLOTS: transceivers in the browser's offer
const ICE_WAIT_MS = 10000; // the node does not trickle: the offer waits for every candidate
const ANSWER_WAIT_MS = 20000;
const METER_MS = 50;
const METER_FLOOR_DB = -60; // the empty end of a level meter
const METER_DECAY = 0.85; // per tick: a short beat stays visible for a moment
const CODE = /^([0-9a-f]{64})\/([0-9a-f]{32})$/;
const HEX64 = /^[0-9a-f]{64}$/;

const text = (v) => (typeof v === 'string' ? v : '');
const jamHref = (id) => `#/jam/${encodeURIComponent(id)}`;
const jamCode = (jam) => `${text(jam?.host)}/${text(jam?.id)}`;

/** Errors in plain words; a node without its p2p listener gets a clear explanation. */
function explain(err) {
  if (err?.code === 'not_federating') {
    return 'Jams are not available: this node is not federating (it runs without its '
      + 'peer-to-peer listener). Start it with --p2p to jam with other nodes.';
  }
  if (err?.status === 404) return 'This jam is over, or this node is not in it.';
  if (err?.name === 'NotAllowedError') {
    return 'The browser did not allow the microphone. Allow it for this site to join with audio.';
  }
  if (err?.name === 'NotFoundError') return 'No microphone found.';
  return err;
}

// ---- #/jam ---------------------------------------------------------------------------

function jamRow(jam) {
  const participants = Array.isArray(jam?.participants) ? jam.participants : [];
  const id = text(jam?.id);
  return h('li', { class: 'jam', dataset: { id } },
    h('a', { href: jamHref(id), class: 'jam-link' }, text(jam?.title) || 'Untitled jam'),
    h('span', { class: 'muted small' },
      `${participants.length} playing · `,
      jam?.hosted_here ? 'hosted here' : `hosted by ${shortId(text(jam?.host))}`),
    jam?.hosted_here || jam?.connected ? null : badge('connecting', 'state-offline'),
    jam?.recording ? badge('recording', 'recording') : null);
}

function createForm(error) {
  const title = h('input', { id: 'jam-title', required: true, maxlength: '120', autocomplete: 'off' });
  const create = h('button', { id: 'jam-create', type: 'submit', class: 'primary' }, 'Start');
  const form = h('form', { id: 'jam-create-form', class: 'inline', novalidate: true },
    field('Title', title), create);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    if (!title.value.trim()) { showError(error, 'Give the jam a title.'); title.focus(); return; }
    try {
      const jam = await busy(create, () => post('/jams', { title: title.value.trim() }));
      location.hash = jamHref(text(jam?.id));
    } catch (err) {
      showError(error, explain(err));
    }
  });
  return form;
}

function joinForm(error) {
  const code = h('input', {
    id: 'jam-code-input', required: true, autocomplete: 'off', autocapitalize: 'none',
    spellcheck: 'false', placeholder: '<host node id>/<jam id>',
  });
  const join = h('button', { id: 'jam-join-code', type: 'submit', class: 'primary' }, 'Join');
  const form = h('form', { id: 'jam-join-form', class: 'inline', novalidate: true },
    field('Jam code', code, 'The code the host shares: its node id, a slash, the jam id. '
      + 'This node needs a peer link to the host (see Peers).'), join);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const value = code.value.trim().toLowerCase();
    if (!CODE.test(value)) {
      showError(error, 'A jam code is the host’s node id (64 hex digits), a slash, and the jam id (32 hex digits).');
      code.focus();
      return;
    }
    try {
      const jam = await busy(join, () => post('/jams', { code: value }));
      location.hash = jamHref(text(jam?.id) || CODE.exec(value)[2]);
    } catch (err) {
      showError(error, explain(err));
    }
  });
  return form;
}

async function renderJams(view, signal) {
  const error = errorBox('jam-error');
  const list = h('ul', { id: 'jam-list', class: 'jam-list', 'aria-label': 'Jams' });
  const empty = h('p', { class: 'muted empty', hidden: true }, 'No jam on this node right now.');
  view.append(h('section', { class: 'card' }, h('h2', {}, 'Jams'), error, list, empty));
  if (can('post')) {
    view.append(
      h('section', { class: 'card' }, h('h2', {}, 'Start a jam'), createForm(error)),
      h('section', { class: 'card' }, h('h2', {}, 'Join a jam by its code'), joinForm(error)));
  }
  let stop = false;
  const load = async () => {
    if (stop) return;
    try {
      const data = await get('/jams');
      if (signal.aborted) return;
      const jams = Array.isArray(data?.jams) ? data.jams : [];
      replace(list, jams.map(jamRow));
      empty.hidden = jams.length > 0;
    } catch (err) {
      if (signal.aborted) return;
      if (err?.code === 'not_federating') stop = true; // it stays so until the node restarts
      showError(error, explain(err));
    }
  };
  await load();
  every(POLL_MS, () => { if (!document.hidden) load(); }, signal);
}

// ---- #/jam/<id>: the live audio ------------------------------------------------------

/** The level (0..1, dBFS scaled from METER_FLOOR_DB) an analyser hears now. */
function levelOf(analyser, buffer) {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  for (let i = 0; i < buffer.length; i += 1) sum += buffer[i] * buffer[i];
  const rms = Math.sqrt(sum / buffer.length);
  if (rms <= 0) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
}

function wait(ms, what) {
  let timer;
  const promise = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took too long`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** Resolve once the peer connection gathered its candidates (or after ICE_WAIT_MS). */
function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ICE_WAIT_MS); // send what we have: host candidates come first
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * One browser's audio in one jam: microphone, socket, peer connection, players
 * and analysers. `hooks` are called with the node's frames; close() undoes it all.
 */
class LiveAudio {
  constructor(jamId, hooks, audioBox) {
    this.jamId = jamId;
    this.hooks = hooks;
    this.audioBox = audioBox;
    this.closed = false;
    this.muted = false;
    this.you = null;
    this.ws = null;
    this.pc = null;
    this.stream = null;
    this.ctx = null;
    this.local = null; // analyser on the microphone
    this.slots = []; // analyser per receive slot
    this.players = [];
    this.answered = null;
  }

  /** Call from a click: the AudioContext and autoplay need the user's gesture. */
  async start() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    this.ctx = Ctx ? new Ctx() : null;
    this.ctx?.resume().catch(() => {});
    this.stream = await navigator.mediaDevices.getUserMedia({
      // Music, not a phone call: no processing that flattens or gates an instrument.
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    if (this.closed) { this.close(); return; }
    const mic = this.stream.getAudioTracks()[0];
    if (!mic) throw new Error('The microphone gave no audio track.');
    mic.enabled = !this.muted; // muted while connecting
    if (this.ctx) this.local = this.analyse(this.stream);

    await this.openSocket();
    if (this.closed) return;

    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addTransceiver(mic, { direction: 'sendrecv', streams: [this.stream] });
    for (let i = 1; i < SLOTS; i += 1) pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.getTransceivers().forEach((t, i) => this.play(i, t.receiver.track));
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'failed' && !this.closed) {
        this.hooks.lost('The audio connection to the node failed.');
      }
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (this.closed) return;

    const timeout = wait(ANSWER_WAIT_MS, 'The node’s answer');
    const answer = new Promise((resolve, reject) => { this.answered = { resolve, reject }; });
    this.send({ t: 'jam-join', jam: this.jamId, sdp: pc.localDescription.sdp });
    try {
      await Promise.race([answer, timeout.promise]);
    } finally {
      timeout.cancel();
      this.answered = null;
    }
  }

  openSocket() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/live/ws`);
    this.ws = ws;
    ws.addEventListener('message', (ev) => this.onFrame(ev.data));
    return new Promise((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('close', () => {
        const err = new Error('The node closed the live connection.');
        reject(err);
        if (this.answered) this.answered.reject(err);
        if (!this.closed) this.hooks.lost('Lost the live connection to the node.');
      }, { once: true });
    });
  }

  send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  onFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || typeof frame !== 'object') return;
    if (frame.jam !== undefined && text(frame.jam?.id ?? frame.jam) !== this.jamId) return;
    switch (frame.t) {
      case 'jam-answer':
        this.you = text(frame.participant);
        if (this.muted) this.send({ t: 'jam-mute', jam: this.jamId, muted: true }); // muted while connecting
        this.pc?.setRemoteDescription({ type: 'answer', sdp: text(frame.sdp) })
          .then(() => this.answered?.resolve(), (err) => this.answered?.reject(err));
        break;
      case 'jam-roster':
        this.you = text(frame.you) || this.you;
        this.hooks.roster(frame);
        break;
      case 'jam-chat':
        this.hooks.chat(Array.isArray(frame.lines) ? frame.lines : []);
        break;
      case 'jam-left':
        if (!this.closed) this.hooks.left(text(frame.reason));
        break;
      case 'jam-ended':
        this.hooks.ended(text(frame.reason));
        break;
      case 'error':
        if (this.answered) this.answered.reject(new Error(text(frame.message) || 'The node refused.'));
        else this.hooks.error(text(frame.message));
        break;
      default: // unknown frames: ignored (forward compatibility)
    }
  }

  analyse(stream) {
    const analyser = this.ctx.createAnalyser();
    analyser.fftSize = 2048;
    this.ctx.createMediaStreamSource(stream).connect(analyser);
    return { analyser, buffer: new Float32Array(analyser.fftSize) };
  }

  play(slot, track) {
    const stream = new MediaStream([track]);
    const player = h('audio', { autoplay: true, class: 'jam-player', dataset: { slot } });
    player.srcObject = stream; // Chrome feeds Web Audio from a remote track only while it plays
    this.audioBox.append(player);
    player.play().catch(() => {}); // autoplay refused: the user's next click is the gesture
    this.players.push(player);
    this.slots[slot] = this.ctx ? this.analyse(stream) : null;
  }

  /** Level (0..1) on receive slot `slot`, or the microphone's for `slot === 'self'`. */
  level(slot) {
    const tap = slot === 'self' ? this.local : this.slots[slot];
    return tap ? levelOf(tap.analyser, tap.buffer) : 0;
  }

  setMuted(muted) {
    this.muted = muted;
    for (const track of this.stream?.getAudioTracks() || []) track.enabled = !muted;
    if (this.you) this.send({ t: 'jam-mute', jam: this.jamId, muted }); // else sent with the answer
  }

  /** Stop everything; `leave` tells the node first (closing the socket leaves too). */
  close(leave = true) {
    const wasOpen = !this.closed;
    this.closed = true;
    if (wasOpen && leave) this.send({ t: 'jam-leave', jam: this.jamId });
    if (this.answered) this.answered.reject(new Error('Left before the node answered.'));
    try { this.ws?.close(1000); } catch { /* already closing */ }
    try { this.pc?.close(); } catch { /* already closed */ }
    for (const track of this.stream?.getTracks() || []) track.stop();
    for (const player of this.players) { player.srcObject = null; player.remove(); }
    this.players = [];
    this.slots = [];
    this.local = null;
    this.ctx?.close().catch(() => {});
  }
}

// ---- #/jam/<id>: the page ------------------------------------------------------------

function participantRow(p, levels) {
  const id = text(p?.id);
  const slot = Number.isInteger(p?.slot) ? p.slot : null;
  const level = levels.get(id) || 0;
  const fill = h('div', { class: 'jam-meter-fill' });
  fill.style.width = `${Math.round(level * 100)}%`; // CSSOM: allowed by the CSP
  const meter = h('div', {
    class: 'jam-meter', role: 'meter', 'aria-label': `Level of ${text(p?.name)}`,
    'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.round(level * 100)),
    dataset: { level: level.toFixed(3) },
  }, fill);
  const classes = ['jam-participant'];
  if (p?.muted) classes.push('muted');
  if (p?.self) classes.push('self');
  return h('li', {
    class: classes.join(' '),
    dataset: {
      id, name: text(p?.name), node: text(p?.node), kind: text(p?.kind),
      muted: p?.muted ? 'true' : 'false', slot: slot === null ? '' : slot, self: p?.self ? 'true' : 'false',
    },
  },
  h('div', { class: 'jam-who' },
    h('span', { class: 'jam-name' }, text(p?.name) || 'someone'),
    p?.self ? badge('you', 'local') : null,
    h('span', { class: 'jam-kind' }, p?.kind === 'track' ? '♪ track' : 'mic'),
    h('span', { class: 'jam-node mono', title: text(p?.node) }, shortId(text(p?.node))),
    p?.muted ? badge('muted', 'muted') : null),
  meter);
}

function recordedRow(item) {
  const title = text(item?.body?.title) || 'Recorded track';
  return h('li', { class: 'jam-recorded-track', dataset: { id: text(item?.id) } },
    h('a', { href: '#/library', class: 'jam-recorded-link' }, title));
}

async function renderJam(view, jamId, signal) {
  const error = errorBox('jam-error');
  const status = statusLine('jam-status');
  const heading = h('h2', { id: 'jam-heading' }, 'Jam');
  const host = h('span', { id: 'jam-host' });
  const state = h('span', { id: 'jam-state' });
  const recordingBadge = badge('recording', 'recording');
  recordingBadge.id = 'jam-recording';
  recordingBadge.hidden = true;
  const code = h('code', { id: 'jam-code', class: 'jam-code mono' });
  const copy = h('button', { id: 'jam-copy', type: 'button', class: 'small' }, 'Copy');
  const codeRow = h('div', { class: 'jam-code-row', hidden: true },
    h('span', { class: 'muted small' }, 'Code to share:'), code, copy);
  const list = h('ul', { id: 'jam-participants', class: 'jam-participants', 'aria-label': 'Participants' });
  const empty = h('p', { id: 'jam-empty', class: 'muted empty' }, 'Nobody is playing yet.');
  const recorded = h('ul', { id: 'jam-recorded', class: 'jam-recorded', 'aria-label': 'Recorded tracks' });
  const recordedBox = h('div', { class: 'jam-recorded-box', hidden: true },
    h('h3', {}, 'Published recordings'), recorded);
  const audioBox = h('div', { id: 'jam-audio', class: 'jam-audio', 'aria-hidden': 'true' });

  const joinAudio = h('button', { id: 'jam-join-audio', type: 'button', class: 'primary' }, 'Join with audio');
  const leaveAudio = h('button', { id: 'jam-leave-audio', type: 'button', hidden: true }, 'Leave audio');
  const mute = h('button', { id: 'jam-mute', type: 'button', hidden: true, 'aria-pressed': 'false' }, 'Mute');
  const record = h('button', { id: 'jam-record', type: 'button' }, 'Start recording');
  const end = h('button', { id: 'jam-end', type: 'button', class: 'danger' }, 'Leave jam');
  const controls = h('div', { class: 'actions jam-controls' },
    joinAudio, mute, leaveAudio, can('upload') ? record : null, end);

  // The jam's chat: lines travel with the audio (the live socket), so it is open while joined.
  const chatList = h('ol', { id: 'jam-chat', class: 'jam-chat', 'aria-label': 'Jam chat', 'aria-live': 'polite' });
  const chatText = h('input', {
    id: 'jam-chat-text', maxlength: '1000', autocomplete: 'off', placeholder: 'Say something to the jam',
  });
  const chatSend = h('button', { id: 'jam-chat-send', type: 'submit' }, 'Send');
  const chatForm = h('form', { id: 'jam-chat-form', class: 'inline', novalidate: true }, chatText, chatSend);
  const chatBox = h('div', { class: 'jam-chat-box', hidden: true },
    h('h3', {}, 'Chat'), chatList, chatForm);
  const chatSeen = new Set();
  const addChat = (lines) => {
    for (const line of lines) {
      const id = text(line?.id);
      if (!id || chatSeen.has(id)) continue;
      chatSeen.add(id);
      chatList.append(h('li', { class: 'jam-chat-line', dataset: { id } },
        h('span', { class: 'jam-chat-name' }, text(line?.name) || 'someone'),
        h('span', { class: 'jam-chat-text' }, text(line?.text))));
    }
    while (chatList.children.length > 200) chatList.firstChild.remove();
    chatList.scrollTop = chatList.scrollHeight;
  };
  chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const said = chatText.value;
    if (!live || !said.trim()) return;
    live.send({ t: 'jam-chat', jam: jamId, text: said });
    chatText.value = '';
  });

  const panel = h('section', { class: 'card jam-view' },
    h('a', { class: 'back', href: '#/jam' }, '← All jams'),
    heading,
    h('p', { class: 'meta' }, host, h('span', { class: 'sep' }, '·'), state, recordingBadge),
    codeRow, error, status,
    can('post') ? [controls, h('p', { class: 'hint' }, 'Use headphones: your microphone hears your speakers.')] : null,
    h('h3', {}, 'Participants'), list, empty, chatBox, recordedBox, audioBox);
  view.append(panel);

  let jam = null;
  let participants = [];
  let live = null; // LiveAudio while joined with audio
  let over = false;
  let pollError = null; // the message a failed poll showed, cleared when a poll works again
  const levels = new Map(); // participant id → level shown (decays between beats)

  const showParticipants = () => {
    replace(list, participants.map((p) => participantRow(p, levels)));
    empty.hidden = participants.length > 0;
  };

  const showJam = () => {
    if (!jam) return;
    heading.textContent = text(jam.title) || 'Untitled jam';
    document.title = `${heading.textContent} · Jam · Talas`;
    host.textContent = jam.hosted_here ? 'Hosted here' : `Hosted by ${shortId(text(jam.host))}`;
    host.title = text(jam.host);
    state.textContent = over ? 'ended'
      : jam.hosted_here || jam.connected ? `started ${fmtDate(jam.created_ms)}` : 'connecting to the host…';
    recordingBadge.hidden = !jam.recording || over;
    code.textContent = jamCode(jam);
    codeRow.hidden = over;
    record.textContent = jam.recording ? 'Stop recording' : 'Start recording';
    record.setAttribute('aria-pressed', jam.recording ? 'true' : 'false');
    end.textContent = jam.hosted_here ? 'End jam' : 'Leave jam';
    showButtons();
  };

  const showButtons = () => {
    const joined = Boolean(live);
    chatBox.hidden = !joined;
    joinAudio.hidden = joined || over;
    leaveAudio.hidden = !joined;
    mute.hidden = !joined;
    mute.textContent = live?.muted ? 'Unmute' : 'Mute';
    mute.setAttribute('aria-pressed', live?.muted ? 'true' : 'false');
    record.hidden = over;
    end.hidden = over;
  };

  const finished = (reason) => {
    over = true;
    stopAudio(false);
    showError(error, `This jam ended${reason ? `: ${reason}` : ''}.`);
    showJam();
    showButtons();
  };

  function stopAudio(leave = true) {
    if (!live) return;
    const closing = live;
    live = null;
    closing.close(leave);
    participants = []; // that roster was this browser's view: the next poll refills the list
    levels.clear();
    showParticipants();
    showButtons();
  }

  // -- the jam's state: polled while not joined (the roster tells it while joined) ------
  let asked = 0; // refreshes started …
  let shown = 0; // … and the latest one whose answer is on the page
  let pending = null; // when the refresh in flight started
  /** Read the jam again, unless a recent read is still on its way (an old one is not waited for). */
  function refresh() {
    if (pending !== null && Date.now() - pending < STALE_MS) return;
    const started = Date.now();
    pending = started;
    load(++asked).finally(() => { if (pending === started) pending = null; });
  }

  async function load(seq) {
    try {
      const data = await get(`/jams/${encodeURIComponent(jamId)}`);
      if (signal.aborted || live || over || seq < shown) return;
      shown = seq;
      jam = data;
      participants = Array.isArray(jam?.participants) ? jam.participants : [];
      showJam();
      showParticipants();
      if (pollError !== null && error.textContent === pollError) clearError(error);
      pollError = null;
    } catch (err) {
      if (signal.aborted || live || over || seq < shown) return;
      if (err?.status === 404 && jam) { finished('it is no longer on this node'); return; }
      if (err?.status === 404 || err?.code === 'not_federating') over = true;
      showError(error, explain(err));
      pollError = error.textContent;
      showButtons();
    }
  }

  // -- meters -----------------------------------------------------------------------------
  const tick = () => {
    if (!live) return;
    for (const row of list.children) {
      const id = row.dataset.id;
      const slot = row.dataset.self === 'true' ? 'self'
        : row.dataset.slot === '' ? null : Number(row.dataset.slot);
      const now = slot === null ? 0 : live.level(slot);
      const shown = Math.max(now, (levels.get(id) || 0) * METER_DECAY);
      levels.set(id, shown < 0.001 ? 0 : shown);
      const meter = row.querySelector('.jam-meter');
      const percent = Math.round(shown * 100);
      meter.dataset.level = shown.toFixed(3);
      meter.setAttribute('aria-valuenow', String(percent));
      meter.firstChild.style.width = `${percent}%`;
    }
  };

  // -- controls ---------------------------------------------------------------------------
  joinAudio.addEventListener('click', async () => {
    if (live || over) return;
    clearError(error);
    status.textContent = 'Connecting your microphone…';
    const session = new LiveAudio(jamId, {
      roster(frame) {
        if (live !== session) return;
        jam = frame.jam && typeof frame.jam === 'object' ? frame.jam : jam;
        participants = Array.isArray(frame.participants) ? frame.participants : [];
        showJam();
        showParticipants();
      },
      left(reason) {
        if (live !== session) return;
        stopAudio(false);
        status.textContent = `You left the audio${reason ? ` (${reason})` : ''}.`;
        refresh();
      },
      chat(lines) { if (live === session) addChat(lines); },
      ended(reason) { if (live === session) finished(reason); },
      error(message) { if (live === session) showError(error, message); },
      lost(message) {
        if (live !== session) return;
        stopAudio(false);
        showError(error, message);
        refresh();
      },
    }, audioBox);
    live = session;
    showButtons();
    try {
      await busy(joinAudio, () => session.start());
      if (live !== session) return;
      status.textContent = 'You are in: everyone hears you.';
    } catch (err) {
      if (live !== session) return; // left (or the page did) while connecting
      stopAudio(true);
      status.textContent = '';
      showError(error, explain(err));
      refresh();
    }
  });

  leaveAudio.addEventListener('click', () => {
    stopAudio(true);
    status.textContent = 'You left the audio. The jam goes on.';
    refresh();
  });

  mute.addEventListener('click', () => {
    if (!live) return;
    live.setMuted(!live.muted);
    showButtons();
    status.textContent = live.muted ? 'Muted: the others hear nothing from you.' : 'Unmuted.';
  });

  record.addEventListener('click', async () => {
    if (!jam || over) return;
    clearError(error);
    const on = !jam.recording;
    try {
      const data = await busy(record, () => post(`/jams/${encodeURIComponent(jamId)}/recording`, { on }));
      if (signal.aborted) return;
      if (on) {
        if (data && typeof data === 'object' && !live) jam = data;
        jam.recording = true;
        status.textContent = 'Recording: each participant to their own track.';
      } else {
        jam.recording = false;
        const tracks = Array.isArray(data?.tracks) ? data.tracks : [];
        replace(recorded, tracks.map(recordedRow));
        recordedBox.hidden = false;
        status.textContent = tracks.length
          ? `Published ${tracks.length} track${tracks.length === 1 ? '' : 's'} to the library.`
          : 'Recording stopped: nobody was heard, nothing to publish.';
      }
      showJam();
    } catch (err) {
      if (!signal.aborted) showError(error, explain(err));
    }
  });

  end.addEventListener('click', async () => {
    if (!jam) return;
    const question = jam.hosted_here
      ? 'End this jam for everyone?'
      : 'Leave this jam? Everyone on this node stops hearing it.';
    if (!window.confirm(question)) return;
    clearError(error);
    try {
      stopAudio(true);
      await busy(end, async () => {
        // Ending drops a recording in progress unpublished: publish it first.
        if (jam.recording && can('upload')) {
          await post(`/jams/${encodeURIComponent(jamId)}/recording`, { on: false });
        }
        await del(`/jams/${encodeURIComponent(jamId)}`);
      });
      if (signal.aborted) return;
      location.hash = '#/jam';
    } catch (err) {
      if (!signal.aborted) showError(error, explain(err));
    }
  });

  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      status.textContent = 'Code copied: send it to whoever joins from another node.';
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      status.textContent = 'The code is selected: copy it with your keyboard or menu.';
    }
  });

  if (can('post')) panel.append(streamForm(jamId, error, status, signal));

  // Leaving the page ends this browser's part in the jam (the jam itself goes on).
  signal.addEventListener('abort', () => stopAudio(true), { once: true });

  refresh();
  every(POLL_MS, () => { if (!live && !over && !document.hidden) refresh(); }, signal);
  every(METER_MS, tick, signal);
}

function streamForm(jamId, error, status, signal) {
  const peer = h('input', { id: 'jam-stream-peer', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none' });
  const track = h('input', { id: 'jam-stream-track', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none' });
  const play = h('button', { id: 'jam-stream-play', type: 'submit' }, 'Play into the jam');
  const form = h('form', { id: 'jam-stream-form', novalidate: true },
    h('h3', {}, 'Play a peer’s track into the jam'),
    h('div', { class: 'row' },
      field('Peer node id', peer, '64 hex digits: a node this one has a peer link to.'),
      field('Track id', track, 'The track’s event id (64 hex digits) on that node.')),
    h('div', { class: 'actions' }, play));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const p = peer.value.trim().toLowerCase();
    const t = track.value.trim().toLowerCase();
    if (!HEX64.test(p) || !HEX64.test(t)) {
      showError(error, 'The peer’s node id and the track id are 64 hex digits each.');
      return;
    }
    try {
      await busy(play, () => post(`/jams/${encodeURIComponent(jamId)}/streams`, { peer: p, track: t }));
      if (signal.aborted) return;
      status.textContent = `Asked ${shortId(p)} to play its track into the jam.`;
      track.value = '';
    } catch (err) {
      if (!signal.aborted) showError(error, explain(err));
    }
  });
  return form;
}

export async function render(view, params) {
  const signal = leaving();
  view.append(pageHeader('Jam', 'Play together, live, with musicians on this and other nodes.'));
  const id = text(params?.id);
  if (id) await renderJam(view, id, signal);
  else await renderJams(view, signal);
}
