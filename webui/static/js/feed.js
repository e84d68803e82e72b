// #/feed — compose box and the paginated feed of posts.
import { h } from './dom.js';
import { post, pager } from './api.js';
import { can, user, session } from './session.js';
import { field, checkField, errorBox, showError, clearError, busy, pageHeader, pagedList } from './ui.js';
import { renderPost } from './render.js';
import { listTracks } from './tracks.js';

/** Fill the "attach a track" select with tracks the user may attach. */
async function fillTrackSelect(sel, asCollective) {
  const me = user()?.author;
  const collective = session.me?.node?.collective;
  let tracks = [];
  try { tracks = await listTracks(''); } catch { /* leave the select with "No track" */ }
  const mine = tracks.filter((t) => t.author === me || (asCollective && t.author === collective));
  const current = sel.value;
  while (sel.options.length > 1) sel.remove(1);
  for (const t of mine) {
    if (!t.body?.blob) continue;
    sel.append(h('option', { value: t.body.blob }, t.body.title || t.filename || 'Untitled track'));
  }
  sel.value = [...sel.options].some((o) => o.value === current) ? current : '';
  sel.closest('.field').hidden = sel.options.length <= 1;
}

function composeForm(onPosted) {
  const text = h('textarea', { id: 'compose-text', rows: '3', maxlength: '5000', placeholder: 'Share something with the collective…' });
  const track = h('select', { id: 'compose-track' }, h('option', { value: '' }, 'No track'));
  const asCollective = h('input', { id: 'compose-as-collective', type: 'checkbox' });
  const submit = h('button', { id: 'compose-submit', type: 'submit', class: 'primary' }, 'Post');
  const error = errorBox('compose-error');
  const trackField = field('Attach one of your tracks', track);
  trackField.hidden = true;
  const form = h('form', { id: 'compose', class: 'card compose' },
    field('New post', text),
    trackField,
    can('post_as_collective') ? checkField(`Post as the collective (${session.me?.node?.name || 'node'})`, asCollective) : null,
    error,
    h('div', { class: 'actions' }, submit));

  if (can('upload') || can('post')) fillTrackSelect(track, false);
  asCollective.addEventListener('change', () => fillTrackSelect(track, asCollective.checked));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    const body = { text: text.value.trim() };
    if (!body.text && !track.value) {
      showError(error, 'Write something or attach a track.');
      text.focus();
      return;
    }
    if (track.value) body.tracks = [track.value];
    // #hashtags in the text become tags.
    // Kept to a conservative ASCII form so the server's validation accepts them.
    const found = [...body.text.matchAll(/(?:^|\s)#([A-Za-z0-9][A-Za-z0-9_-]{0,31})/g)];
    const tags = [...new Set(found.map((m) => m[1].toLowerCase()))];
    if (tags.length) body.tags = tags.slice(0, 10);
    body.as = asCollective.checked && can('post_as_collective') ? 'collective' : 'me';
    try {
      const item = await busy(submit, () => post('/posts', body));
      text.value = '';
      track.value = '';
      onPosted(item);
    } catch (err) {
      showError(error, err);
    }
  });
  return form;
}

export async function render(view) {
  view.append(pageHeader('Feed', 'Posts from the collective, its members and the artists you follow.'));
  const list = h('div', { id: 'feed-list', class: 'item-list', 'aria-live': 'polite' });
  const more = h('button', { id: 'feed-more', type: 'button', class: 'more', hidden: true }, 'Load more');
  const error = errorBox('feed-error');
  let feed = null;
  if (can('post')) view.append(composeForm((item) => feed.prepend(item)));
  view.append(h('section', { class: 'feed', 'aria-label': 'Posts' }, error, list, more));
  feed = pagedList({ list, more, errorEl: error, renderItem: renderPost, emptyText: 'No posts yet. Say hello!' });
  await feed.reload(pager('/feed'));
}
