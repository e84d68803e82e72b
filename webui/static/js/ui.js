// Shared UI pieces: form fields, error boxes, paged lists, author links.
import { h, clear, shortId } from './dom.js';

/** An (initially hidden) alert element for error messages. */
export function errorBox(id) {
  return h('p', { id, class: 'error', role: 'alert', hidden: true });
}

export function showError(el, err) {
  el.textContent = err?.message || String(err);
  el.hidden = false;
}

export function clearError(el) {
  el.textContent = '';
  el.hidden = true;
}

/** A polite status line (e.g. "Uploading…"). */
export function statusLine(id) {
  return h('p', { id, class: 'status', role: 'status', 'aria-live': 'polite' });
}

/** Label + control. The control must have an id (used for <label for>). */
export function field(label, control, hint) {
  const hintEl = hint ? h('small', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

/** Checkbox with its label on the right. */
export function checkField(label, input) {
  return h('div', { class: 'field check' }, input, h('label', { for: input.id }, label));
}

/** <select> from [[value, label], ...]. */
export function select(attrs, options, selected) {
  return h('select', attrs, options.map(([value, label]) =>
    h('option', { value, selected: value === selected }, label)));
}

/** Run `fn` with `button` disabled (prevents double submits). */
export async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** Link to an author's profile, labelled with their name or short id. */
export function authorLink(id, name) {
  return h('a', { class: 'author', href: `#/author/${encodeURIComponent(id || '')}`, title: id || '' },
    name || shortId(id) || 'unknown');
}

/** Page title + optional subtitle. */
export function pageHeader(title, subtitle) {
  return h('header', { class: 'page-header' },
    h('h1', { tabindex: '-1' }, title),
    subtitle ? h('p', { class: 'muted' }, subtitle) : null);
}

/** A card section with a heading. */
export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), children);
}

/**
 * Fill `list` from a pager (see api.js), with a "Load more" button.
 * Returns {reload(pager), prepend(item)}.
 */
export function pagedList({ list, more, errorEl, renderItem, emptyText }) {
  let pager = null;
  let shown = 0;
  const empty = h('p', { class: 'muted empty' }, emptyText || 'Nothing here yet.');

  async function loadPage() {
    if (!pager) return;
    const current = pager;
    more.disabled = true;
    more.textContent = 'Loading…';
    if (errorEl) clearError(errorEl);
    try {
      const items = await current.next();
      if (current !== pager) return; // a reload happened meanwhile
      for (const item of items) list.append(renderItem(item));
      shown += items.length;
      empty.hidden = shown > 0;
      more.hidden = current.done;
    } catch (err) {
      if (current !== pager) return;
      if (errorEl) showError(errorEl, err);
    } finally {
      more.disabled = false;
      more.textContent = 'Load more';
    }
  }

  more.addEventListener('click', loadPage);
  list.after(empty);
  empty.hidden = true;

  return {
    reload(newPager) {
      pager = newPager;
      shown = 0;
      clear(list);
      more.hidden = true;
      return loadPage();
    },
    prepend(item) {
      list.prepend(renderItem(item));
      shown += 1;
      empty.hidden = true;
    },
  };
}

/** Small pill/badge. */
export function badge(text, kind) {
  return h('span', { class: `badge${kind ? ` badge-${kind}` : ''}` }, text);
}
