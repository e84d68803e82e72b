// #/members — user management (needs manage_users).
import { h, timeEl, shortId } from './dom.js';
import { get, post, patch, del } from './api.js';
import { can, user } from './session.js';
import { field, select, errorBox, showError, clearError, busy, pageHeader, section, badge } from './ui.js';

const ROLES = [['owner', 'Owner'], ['admin', 'Admin'], ['member', 'Member'], ['guest', 'Guest']];
const NAME_PATTERN = '[a-z0-9][a-z0-9_\\-]{0,31}';

/** Roles the current user may hand out: only owners create or touch owners. */
function assignableRoles() {
  return user()?.role === 'owner' ? ROLES : ROLES.filter(([r]) => r !== 'owner');
}

function memberRow(u, errorEl) {
  const me = user();
  const self = me?.name === u.name;
  const locked = self || (u.role === 'owner' && me?.role !== 'owner');
  const li = h('li', { class: 'member card', dataset: { name: u.name } });
  const head = h('div', { class: 'member-head' },
    h('strong', { class: 'member-name' }, u.name),
    badge(u.role, 'role'),
    self ? badge('you') : null,
    h('a', { href: `#/author/${encodeURIComponent(u.author || '')}`, class: 'mono small' }, shortId(u.author)),
    h('span', { class: 'muted small' }, 'since ', timeEl(u.created)));
  li.append(head);
  if (locked) return li;

  const n = u.name.replace(/[^a-z0-9_-]/g, '');
  const role = select({ id: `member-role-${n}`, class: 'member-role' }, assignableRoles(), u.role);
  const apply = h('button', { type: 'submit', class: 'small member-apply' }, 'Change role');
  const password = h('input', {
    id: `member-password-${n}`, class: 'member-password', type: 'password', minlength: '10', autocomplete: 'new-password',
  });
  const setPassword = h('button', { type: 'submit', class: 'small member-set-password' }, 'Set password');
  const remove = h('button', { type: 'button', class: 'small danger member-remove' }, 'Remove');

  // Each control group is its own small form, so Enter submits it.
  const roleForm = h('form', { class: 'inline member-role-form' }, field(`Role for ${u.name}`, role), apply);
  const passwordForm = h('form', { class: 'inline member-password-form', novalidate: true },
    // Lets password managers associate the new password with this user.
    h('input', { type: 'text', autocomplete: 'username', value: u.name, hidden: true, readOnly: true, tabindex: '-1', 'aria-hidden': 'true' }),
    field(`New password for ${u.name}`, password), setPassword);

  roleForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(errorEl);
    try {
      const updated = await busy(apply, () => patch(`/users/${encodeURIComponent(u.name)}`, { role: role.value }));
      li.replaceWith(memberRow(updated || { ...u, role: role.value }, errorEl));
    } catch (err) { showError(errorEl, err); }
  });
  passwordForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(errorEl);
    if (password.value.length < 10) { showError(errorEl, 'Passwords need at least 10 characters.'); return; }
    try {
      await busy(setPassword, () => patch(`/users/${encodeURIComponent(u.name)}`, { password: password.value }));
      password.value = '';
      window.alert(`Password for ${u.name} changed.`);
    } catch (err) { showError(errorEl, err); }
  });
  remove.addEventListener('click', async () => {
    if (!window.confirm(`Remove ${u.name}? They will be signed out and can no longer sign in.`)) return;
    clearError(errorEl);
    try {
      await busy(remove, () => del(`/users/${encodeURIComponent(u.name)}`));
      li.remove();
    } catch (err) { showError(errorEl, err); }
  });

  li.append(h('div', { class: 'member-controls' }, roleForm, passwordForm, h('div', { class: 'actions' }, remove)));
  return li;
}

function addForm(list, listError) {
  const name = h('input', {
    id: 'member-name', required: true, pattern: NAME_PATTERN, maxlength: '32', autocapitalize: 'none', autocomplete: 'off',
  });
  const role = select({ id: 'member-role' }, assignableRoles(), 'member');
  const password = h('input', { id: 'member-password', type: 'password', required: true, minlength: '10', autocomplete: 'new-password' });
  const submit = h('button', { id: 'member-submit', type: 'submit', class: 'primary' }, 'Add member');
  const error = errorBox('member-error');
  const form = h('form', { id: 'member-form', class: 'card', novalidate: true },
    h('h2', {}, 'Add a person'),
    field('Username', name, 'Lowercase letters, digits, "-" and "_"; up to 32 characters.'),
    field('Role', role),
    field('Initial password', password, 'At least 10 characters. Share it privately.'),
    error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    if (!form.checkValidity()) {
      showError(error, 'Check the username (lowercase, digits, - and _) and use a password of at least 10 characters.');
      return;
    }
    try {
      const created = await busy(submit, () => post('/users', {
        name: name.value.trim(), role: role.value, password: password.value,
      }));
      form.reset();
      role.value = 'member';
      list.append(memberRow(created, listError));
    } catch (err) { showError(error, err); }
  });
  return form;
}

export async function render(view) {
  view.append(pageHeader('Members', 'People who can sign in to this node.'));
  if (!can('manage_users')) {
    view.append(h('p', { class: 'card' }, 'Only owners and admins can manage members.'));
    return;
  }
  const list = h('ul', { id: 'member-list', class: 'member-list' });
  const error = errorBox('member-list-error');
  view.append(addForm(list, error), section('Everyone', error, list));
  try {
    const data = await get('/users');
    for (const u of data?.items || []) list.append(memberRow(u, error));
  } catch (err) { showError(error, err); }
}
