// Sign in with a token. It is kept in this tab's sessionStorage only and sent in the
// Authorization header; the form never submits it anywhere (so never into a URL).

import { h } from '../dom.js';

export function render({ signIn, message }) {
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'paste an admin or api token' });
  const error = h('p', { class: 'error', role: 'alert', hidden: !message }, message || '');
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'signin', method: 'post', action: '#' },
    h('h1', {}, h('img', { src: '/console/icon.svg', alt: '' }), 'reeve'),
    h('p', { class: 'muted' }, 'Watches, builds and the audit trail of this control plane.'),
    h('label', { class: 'field' }, h('span', {}, 'Token'), input),
    error, button,
    h('p', { class: 'hint muted' }, 'On the server\u2019s machine the admin token is in reeve-data/admin.token. It stays in this tab only.'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      await signIn(input.value.trim());
    } catch (e) {
      error.textContent = e.code ? `${e.message} (${e.code})` : e.message;
      error.hidden = false;
      button.disabled = false;
      input.select();
    }
  });
  setTimeout(() => input.focus(), 0);
  return h('div', { class: 'signin-page' }, form);
}
