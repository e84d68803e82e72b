// Renderers for Items (posts, tracks, offers, courses). All server text is
// inserted through h()/textContent, so markup in it shows up literally.
import { h, append, timeEl, fmtDuration, fmtSize } from './dom.js';
import { del } from './api.js';
import { canDelete } from './session.js';
import { authorLink, badge, busy } from './ui.js';
import { attachedTrack, audioFor, forgetTrack } from './tracks.js';

const text = (v) => (typeof v === 'string' ? v : v === null || v === undefined ? '' : String(v));

export const CATEGORIES = [['gear', 'Gear'], ['preset', 'Preset'], ['sample', 'Sample'],
  ['service', 'Service'], ['other', 'Other']];
export const CONDITIONS = [['new', 'New'], ['like-new', 'Like new'], ['good', 'Good'],
  ['fair', 'Fair'], ['for-parts', 'For parts'], ['not-applicable', 'Not applicable']];
export const LEVELS = [['beginner', 'Beginner'], ['intermediate', 'Intermediate'],
  ['advanced', 'Advanced']];
export const FORMATS = [['guide', 'Guide'], ['tutorial', 'Tutorial'], ['exercise', 'Exercise'],
  ['audio', 'Audio'], ['video', 'Video'], ['reading', 'Reading']];

export const labelOf = (pairs, value) => (pairs.find(([v]) => v === value) || [null, text(value)])[1];

/** Author link + time + "federated" badge. */
function meta(item) {
  return h('div', { class: 'meta' },
    authorLink(item.author, item.author_name),
    h('span', { class: 'sep', 'aria-hidden': 'true' }, '·'),
    timeEl(item.created),
    item.local === false ? badge('federated', 'remote') : null);
}

/** Delete button for items the user may delete; removes `article` on success. */
function deleteButton(item, article, isTrack) {
  if (!canDelete(item)) return null;
  const button = h('button', { type: 'button', class: 'danger small item-delete' }, 'Delete');
  button.addEventListener('click', async () => {
    if (!window.confirm('Delete this for everyone? This cannot be undone.')) return;
    try {
      await busy(button, () => del(isTrack
        ? `/tracks/${encodeURIComponent(item.id)}`
        : `/events/${encodeURIComponent(item.id)}`));
      if (isTrack) forgetTrack(item);
      article.remove();
    } catch (err) {
      window.alert(err.message);
    }
  });
  return button;
}

export function renderPost(item) {
  const body = item.body || {};
  const article = h('article', { class: 'post card', dataset: { id: item.id } });
  const refs = Array.isArray(body.tracks) ? body.tracks : [];
  const tags = Array.isArray(body.tags) ? body.tags : [];
  append(article,
    meta(item),
    h('p', { class: 'post-text' }, text(body.text)),
    refs.length ? h('div', { class: 'post-tracks' }, refs.map((r) => attachedTrack(r, item.author))) : null,
    tags.length ? h('ul', { class: 'tags' }, tags.map((t) => h('li', {}, `#${text(t)}`))) : null,
  );
  const actions = deleteButton(item, article, false);
  if (actions) append(article, h('div', { class: 'actions' }, actions));
  return article;
}

export function renderTrackItem(item) {
  const body = item.body || {};
  const article = h('article', { class: 'track-item card', dataset: { id: item.id } });
  append(article,
    meta(item),
    h('h3', { class: 'track-title' }, text(body.title) || 'Untitled track'),
    h('p', { class: 'muted' },
      h('span', { class: 'track-duration' }, fmtDuration(body.duration_ms)),
      body.size ? ` · ${fmtSize(body.size)}` : null),
    audioFor(item));
  const actions = deleteButton(item, article, true);
  if (actions) append(article, h('div', { class: 'actions' }, actions));
  return article;
}

export function renderOffer(item) {
  const b = item.body || {};
  const article = h('article', { class: 'offer card', dataset: { id: item.id } });
  const row = (label, value) => (value ? [h('dt', {}, label), h('dd', {}, text(value))] : null);
  append(article,
    meta(item),
    h('h3', { class: 'offer-title' }, text(b.title) || 'Untitled offer'),
    h('div', { class: 'badges' },
      badge(labelOf(CATEGORIES, b.category), 'category'),
      b.condition ? badge(labelOf(CONDITIONS, b.condition)) : null,
      b.status ? badge(text(b.status), 'status') : null),
    h('dl', { class: 'offer-details' },
      row('Offered', b.offered), row('Wanted', b.wanted), row('Location', b.location)),
  );
  const actions = deleteButton(item, article, false);
  if (actions) append(article, h('div', { class: 'actions' }, actions));
  return article;
}

export function renderCourseCard(item) {
  const b = item.body || {};
  const lessons = Array.isArray(b.lessons) ? b.lessons : [];
  const minutes = lessons.reduce((sum, l) => sum + (Number.isFinite(l?.minutes) ? l.minutes : 0), 0);
  const article = h('article', { class: 'course card', dataset: { id: item.id } });
  append(article,
    meta(item),
    h('h3', { class: 'course-title' },
      h('a', { href: `#/course/${encodeURIComponent(item.id)}` }, text(b.title) || 'Untitled course')),
    b.summary ? h('p', { class: 'course-summary' }, text(b.summary)) : null,
    h('div', { class: 'badges' },
      b.level ? badge(labelOf(LEVELS, b.level), 'level') : null,
      badge(`${lessons.length} lesson${lessons.length === 1 ? '' : 's'}`),
      minutes ? badge(`${minutes} min`) : null),
  );
  const actions = deleteButton(item, article, false);
  if (actions) append(article, h('div', { class: 'actions' }, actions));
  return article;
}

/** Any item, by kind. Unknown kinds get a minimal card. */
export function renderItem(item) {
  switch (item?.kind) {
    case 'post': return renderPost(item);
    case 'track': return renderTrackItem(item);
    case 'offer': return renderOffer(item);
    case 'course': return renderCourseCard(item);
    default:
      return h('article', { class: 'item card' }, meta(item || {}),
        h('p', { class: 'muted' }, `A ${text(item?.kind) || 'unknown'} event.`));
  }
}
