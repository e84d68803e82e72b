// #/library — upload tracks and list this node's tracks.
import { h, append, fmtDuration, fmtSize, timeEl } from './dom.js';
import { api, del, pager } from './api.js';
import { can, canDelete } from './session.js';
import { field, errorBox, showError, clearError, busy, pageHeader, pagedList, statusLine, authorLink } from './ui.js';
import { audioFor, rememberTracks, forgetTrack, invalidateTracks } from './tracks.js';

const MEDIA_CACHE = 'talas-media-v1'; // must match sw.js

/** Drop a deleted track's audio from the service worker's offline cache. */
async function dropOffline(track) {
  if (!('caches' in window) || !track?.body?.blob) return;
  try {
    const cache = await caches.open(MEDIA_CACHE);
    await cache.delete(`/media/tracks/${track.body.blob}`);
  } catch { /* best effort */ }
}

function renderTrack(track, errorEl) {
  const body = track.body || {};
  const title = body.title || track.filename || 'Untitled track';
  const li = h('li', { class: 'track card', dataset: { id: track.id } });
  const details = [fmtSize(body.size), body.mime, track.filename].filter(Boolean).join(' · ');
  append(li,
    h('div', { class: 'track-head' },
      h('h3', { class: 'track-title' }, title),
      h('span', { class: 'track-duration', 'aria-label': 'Duration' }, fmtDuration(body.duration_ms))),
    h('div', { class: 'meta' }, authorLink(track.author, track.author_name), h('span', { class: 'sep' }, '·'), timeEl(track.created)),
    audioFor(track),
    details ? h('p', { class: 'muted small track-details' }, details) : null);
  if (canDelete(track)) {
    const remove = h('button', { type: 'button', class: 'danger small track-delete', 'aria-label': `Delete ${title}` }, 'Delete');
    remove.addEventListener('click', async () => {
      if (!window.confirm(`Delete "${title}"? This cannot be undone.`)) return;
      clearError(errorEl);
      try {
        await busy(remove, () => del(`/tracks/${encodeURIComponent(track.id)}`));
        forgetTrack(track);
        invalidateTracks();
        dropOffline(track);
        li.remove();
      } catch (err) {
        showError(errorEl, err);
      }
    });
    append(li, h('div', { class: 'actions' }, remove));
  }
  return li;
}

function uploadForm(errorEl, onUploaded) {
  const file = h('input', { id: 'track-file', type: 'file', accept: 'audio/*', required: true });
  const title = h('input', { id: 'track-title', maxlength: '200', placeholder: 'Defaults to the file name' });
  const submit = h('button', { id: 'track-upload', type: 'submit', class: 'primary' }, 'Upload');
  const status = statusLine('track-status');
  file.addEventListener('change', () => {
    // Suggest a title from the file name, unless the user typed one.
    const f = file.files?.[0];
    if (f && !title.value.trim()) title.value = f.name.replace(/\.[^.]+$/, '').replace(/[_]+/g, ' ');
  });
  const form = h('form', { id: 'upload', class: 'card' },
    h('h2', {}, 'Upload a track'),
    field('Audio file', file), field('Title', title), errorEl, status,
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(errorEl);
    const f = file.files?.[0];
    if (!f) { showError(errorEl, 'Choose an audio file first.'); file.focus(); return; }
    const name = title.value.trim() || f.name.replace(/\.[^.]+$/, '');
    status.textContent = `Uploading ${f.name} (${fmtSize(f.size)})…`;
    try {
      // The raw file is the request body; title and filename go in the query.
      const track = await busy(submit, () => api('POST', '/tracks', {
        query: { title: name, filename: f.name },
        body: f,
        headers: { 'Content-Type': f.type || 'application/octet-stream' },
      }));
      status.textContent = `Uploaded "${track?.body?.title || name}".`;
      form.reset();
      rememberTracks([track]);
      invalidateTracks();
      onUploaded(track);
    } catch (err) {
      status.textContent = '';
      showError(errorEl, err);
    }
  });
  return form;
}

export async function render(view) {
  view.append(pageHeader('Library', "Tracks published by this node's collective and members."));
  const error = errorBox('library-error');
  const list = h('ul', { id: 'track-list', class: 'track-list' });
  const more = h('button', { id: 'track-more', type: 'button', class: 'more', hidden: true }, 'Load more');
  let paged = null;
  if (can('upload')) view.append(uploadForm(error, (track) => paged.prepend(track)));
  else view.append(error);
  view.append(h('section', { 'aria-label': 'Tracks' }, list, more));
  paged = pagedList({
    list, more, errorEl: error, emptyText: 'No tracks yet.',
    renderItem: (track) => { rememberTracks([track]); return renderTrack(track, error); },
  });
  await paged.reload(pager('/tracks'));
}
