// #/author/<id> — an author's profile, follow toggle and their items by kind.
import { h, replace, shortId } from './dom.js';
import { get, post, del, pager } from './api.js';
import { can, isMine } from './session.js';
import { errorBox, showError, clearError, busy, pagedList, badge } from './ui.js';
import { renderItem } from './render.js';

const KINDS = [['post', 'Posts'], ['track', 'Tracks'], ['offer', 'Offers'], ['course', 'Courses']];

function followButton(author) {
  // Following is only meaningful for authors that are not this node's own.
  if (!can('post') || author.local_user || isMine(author.id)) return null;
  let following = Boolean(author.following);
  const button = h('button', { id: 'follow-toggle', type: 'button' });
  const paint = () => {
    button.textContent = following ? 'Unfollow' : 'Follow';
    button.className = following ? '' : 'primary';
    button.setAttribute('aria-pressed', String(following));
  };
  paint();
  button.addEventListener('click', async () => {
    try {
      await busy(button, () => (following
        ? del(`/follows/${encodeURIComponent(author.id)}`)
        : post('/follows', { author: author.id })));
      following = !following;
      paint();
    } catch (err) {
      window.alert(err.message);
    }
  });
  return button;
}

/** "Message" link to a conversation with this author (not oneself, not the collective). */
function messageLink(author) {
  if (!can('post') || author.collective || isMine(author.id)) return null;
  return h('a', { id: 'author-message', class: 'button', href: `#/messages/${encodeURIComponent(author.id)}` }, 'Message');
}

/**
 * Block / unblock toggle for authors that are not this node's own (needs
 * manage_peers). `blockedBadge` is shown while the author is blocked.
 */
function blockButton(author, blocked, blockedBadge) {
  if (!can('manage_peers') || author.local_user || author.collective || isMine(author.id)) return null;
  let isBlocked = blocked;
  const button = h('button', { id: 'block-author', type: 'button' });
  const paint = () => {
    button.textContent = isBlocked ? 'Unblock' : 'Block';
    button.className = isBlocked ? '' : 'danger';
    button.setAttribute('aria-pressed', String(isBlocked));
    blockedBadge.hidden = !isBlocked;
  };
  paint();
  button.addEventListener('click', async () => {
    try {
      await busy(button, () => (isBlocked
        ? del(`/blocks/${encodeURIComponent(author.id)}`)
        : post('/blocks', { target: author.id, what: 'author' })));
      isBlocked = !isBlocked;
      paint();
    } catch (err) {
      window.alert(err.message);
    }
  });
  return button;
}

/** Is `authorId` on this node's block list? Only asked of users who may see it. */
async function isBlocked(authorId) {
  if (!can('manage_peers')) return false;
  try {
    const items = (await get('/blocks'))?.items || [];
    return items.some((b) => b?.target === authorId && b?.what !== 'node');
  } catch {
    return false;
  }
}

export async function render(view, { id }) {
  const error = errorBox('author-error');
  view.append(error);
  let author;
  try {
    author = await get(`/authors/${encodeURIComponent(id)}`);
  } catch (err) {
    view.append(h('h1', { tabindex: '-1' }, 'Author'));
    showError(error, err);
    return;
  }
  const counts = author.counts || {};
  const remote = !author.local_user && !author.collective;
  const blockedBadge = badge('blocked', 'blocked');
  blockedBadge.id = 'author-blocked';
  blockedBadge.hidden = true;
  const blocked = remote ? await isBlocked(author.id) : false;
  view.append(h('header', { class: 'page-header profile card' },
    h('h1', { id: 'author-name', tabindex: '-1' }, author.name || author.local_user || shortId(author.id)),
    typeof author.bio === 'string' && author.bio ? h('p', { id: 'author-bio', class: 'bio' }, author.bio) : null,
    h('p', { class: 'author-id mono', title: author.id }, author.id),
    h('div', { class: 'badges' },
      author.local_user ? badge(`member: ${author.local_user}`, 'local')
        : author.collective ? badge('collective', 'local') : badge('remote author', 'remote'),
      author.following ? badge('following') : null,
      blockedBadge),
    h('div', { class: 'actions' }, messageLink(author), followButton(author), blockButton(author, blocked, blockedBadge))));

  // Tabs: one list per kind, loaded on demand.
  const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Content' });
  const list = h('div', { id: 'author-items', class: 'item-list', role: 'tabpanel' });
  const more = h('button', { id: 'author-more', type: 'button', class: 'more', hidden: true }, 'Load more');
  const listError = errorBox('author-items-error');
  view.append(tabs, listError, list, more);
  const paged = pagedList({ list, more, errorEl: listError, renderItem, emptyText: 'Nothing of this kind yet.' });

  const buttons = KINDS.map(([kind, label]) => {
    const b = h('button', { type: 'button', role: 'tab', class: 'tab', dataset: { kind } },
      `${label} (${Number(counts[kind]) || 0})`);
    b.addEventListener('click', () => select(kind));
    return b;
  });
  replace(tabs, buttons);

  function select(kind) {
    clearError(listError);
    for (const b of buttons) b.setAttribute('aria-selected', String(b.dataset.kind === kind));
    return paged.reload(pager(`/authors/${encodeURIComponent(author.id || id)}/items`, { kind }));
  }
  // Start on the first kind that has content.
  const first = KINDS.find(([kind]) => Number(counts[kind]) > 0);
  await select(first ? first[0] : 'post');
}
