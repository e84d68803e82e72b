// #/signin — username/password sign-in, or first-run owner creation.
import { h } from './dom.js';
import { get, post, setCsrf } from './api.js';
import { loadMe } from './session.js';
import { navigate } from './router.js';
import { field, errorBox, showError, clearError, busy } from './ui.js';

async function finish(result) {
  setCsrf(result?.csrf);
  await loadMe(); // permissions and node info only come from /me
  navigate('/feed');
}

function signinForm() {
  const username = h('input', {
    id: 'signin-username', name: 'username', autocomplete: 'username', required: true,
    autocapitalize: 'none', spellcheck: 'false',
  });
  const password = h('input', {
    id: 'signin-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const submit = h('button', { id: 'signin-submit', type: 'submit', class: 'primary' }, 'Sign in');
  const error = errorBox('signin-error');
  const form = h('form', { id: 'signin-form', class: 'card narrow', novalidate: true },
    h('h2', {}, 'Sign in'),
    field('Username', username), field('Password', password), error, submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    if (!username.value.trim() || !password.value) {
      showError(error, 'Enter your username and password.');
      return;
    }
    try {
      await busy(submit, async () => finish(await post('/session', {
        username: username.value.trim(), password: password.value,
      })));
    } catch (err) {
      password.value = '';
      showError(error, err.code === 'bad_credentials' ? 'Wrong username or password.' : err);
      password.focus();
    }
  });
  return form;
}

function setupForm() {
  const code = h('input', { id: 'setup-code', autocomplete: 'off', required: true, spellcheck: 'false' });
  const username = h('input', {
    id: 'setup-username', autocomplete: 'username', required: true, autocapitalize: 'none',
    pattern: '[a-z0-9][a-z0-9_\\-]{0,31}', maxlength: '32',
  });
  const password = h('input', {
    id: 'setup-password', type: 'password', autocomplete: 'new-password', required: true, minlength: '10',
  });
  const submit = h('button', { id: 'setup-submit', type: 'submit', class: 'primary' }, 'Create owner account');
  const error = errorBox('setup-error');
  const form = h('form', { id: 'setup-form', class: 'card narrow', novalidate: true },
    h('h2', {}, 'Welcome to Talas'),
    h('p', {}, 'This node has no accounts yet. Create the owner account with the setup code the node printed when it started.'),
    field('Setup code', code),
    field('Username', username, 'Lowercase letters, digits, "-" and "_"; up to 32 characters.'),
    field('Password', password, 'At least 10 characters.'),
    error, submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError(error);
    if (!form.checkValidity()) {
      showError(error, 'Fill in every field: a valid username and a password of at least 10 characters.');
      return;
    }
    try {
      await busy(submit, async () => finish(await post('/setup', {
        setup_code: code.value.trim(), username: username.value.trim(), password: password.value,
      })));
    } catch (err) {
      showError(error, err);
    }
  });
  return form;
}

export async function render(view) {
  view.append(h('header', { class: 'page-header center' }, h('h1', { tabindex: '-1' }, 'Talas')));
  const signin = signinForm();
  view.append(signin);
  let needed = false;
  try {
    needed = Boolean((await get('/setup'))?.needed);
  } catch { /* endpoint unavailable: plain sign-in */ }
  if (!needed) {
    signin.querySelector('#signin-username').focus();
    return;
  }
  // First run: nobody can sign in yet, so lead with the setup form and keep
  // the sign-in form one click away.
  signin.hidden = true;
  const toggle = h('button', { type: 'button', class: 'link', id: 'show-signin' }, 'I already have an account');
  toggle.addEventListener('click', () => { signin.hidden = false; toggle.hidden = true; });
  const setup = setupForm();
  view.insertBefore(setup, signin);
  view.insertBefore(h('p', { class: 'center' }, toggle), signin);
  setup.querySelector('#setup-code').focus();
}
