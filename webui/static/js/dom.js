// Tiny DOM helpers. Everything that comes from the server is inserted as
// text (createTextNode / textContent / setAttribute) — never parsed as HTML.

// Properties assigned directly rather than via setAttribute (so that e.g.
// `checked: false` really unchecks and `value` sets the live value).
const PROPS = new Set([
  'value', 'checked', 'selected', 'disabled', 'hidden', 'required',
  'multiple', 'readOnly', 'open', 'controls',
]);

/**
 * h('button', {class: 'x', onclick: fn, type: 'button'}, 'text', childNode, [more])
 * - `on<event>` attributes must be functions and become addEventListener.
 * - `style` and any *HTML attribute is refused: the CSP forbids inline styles
 *   and we never parse markup.
 * - null / undefined / false attribute values and children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) {
      if (typeof value !== 'function') throw new TypeError(`${key} must be a function`);
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'style' || /html/i.test(key)) {
      throw new TypeError(`h(): attribute ${key} is not allowed`);
    } else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (PROPS.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/**
 * Append children (strings become text nodes; arrays are flattened; null,
 * undefined and false are skipped — unlike the native Element.append, which
 * would insert the text "null").
 */
export function append(parent, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Remove every child of `el`. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

/**
 * Only same-origin absolute paths ("/media/...") are accepted as URLs that
 * came from the server; anything else (javascript:, //evil, http://) → null.
 */
export function safePath(url) {
  if (typeof url !== 'string') return null;
  return url.startsWith('/') && !url.startsWith('//') && !url.startsWith('/\\') ? url : null;
}

/** Milliseconds since the epoch → local date/time string. */
export function fmtDate(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
  return new Date(ms).toLocaleString();
}

/** Milliseconds → m:ss (h:mm:ss past an hour). */
export function fmtDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '–:––';
  const total = Math.round(ms / 1000);
  const s = String(total % 60).padStart(2, '0');
  const m = Math.floor(total / 60);
  if (m < 60) return `${m}:${s}`;
  return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${s}`;
}

/** Bytes → short human size. */
export function fmtSize(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** First characters of a long hex id, for display. */
export function shortId(id) {
  return typeof id === 'string' && id.length > 12 ? `${id.slice(0, 8)}…${id.slice(-4)}` : String(id ?? '');
}

/** A <time> element for a ms timestamp. */
export function timeEl(ms) {
  const valid = typeof ms === 'number' && Number.isFinite(ms);
  return h('time', { datetime: valid ? new Date(ms).toISOString() : null }, fmtDate(ms));
}
