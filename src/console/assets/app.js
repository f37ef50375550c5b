// The console: sign-in, the frame around the views, the router (the part of the URL after
// `#`, so the server serves one page), and the dialogs every view shares.

import { h, fill, shortId } from './dom.js';
import { api, session, onUnauthorized, ApiError } from './api.js';
import * as live from './live.js';
import * as signin from './views/signin.js';
import * as watches from './views/watches.js';
import * as builds from './views/builds.js';
import * as build from './views/build.js';
import * as audit from './views/audit.js';
import * as tokens from './views/tokens.js';

const root = document.getElementById('app');
let me = null;
let cleanup = null;
let view = null;

/** Routes: `#/watches`, `#/builds/<project>`, `#/builds/<project>/<build>[/<job>]`,
 *  `#/audit`, `#/tokens`. */
function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case 'builds':
      return parts.length >= 3
        ? { view: build, name: 'builds', params: { project: parts[1], build: parts[2], job: parts[3] } }
        : { view: builds, name: 'builds', params: { project: parts[1] } };
    case 'audit':
      return { view: audit, name: 'audit', params: {} };
    case 'tokens':
      return { view: tokens, name: 'tokens', params: {} };
    default:
      return { view: watches, name: 'watches', params: {} };
  }
}

export function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

/** A message at the top of the page: a refusal's text, or what just happened. */
export function toast(text, kind = 'error') {
  const area = document.getElementById('toasts');
  if (!area) return;
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, text),
    h('button', { class: 'link', type: 'button', 'aria-label': 'dismiss', onclick: () => t.remove() }, '×'));
  area.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 15000 : 4000);
}

/** A refusal as people read it: the server's own words, and its code. */
export function refusalText(e) {
  if (e instanceof ApiError) return e.code ? `${e.message} (${e.code})` : e.message;
  return String(e && e.message ? e.message : e);
}

/**
 * A modal dialog. `fields`: [{name, label, value, type: 'text'|'number'|'textarea'|'select',
 * options, required}]. `action(values)` runs on OK; a refusal it throws is shown in the dialog,
 * which stays open. Resolves to the action's result, or null when cancelled.
 */
export function ask({ title, text, fields = [], ok = 'OK', danger = false, action }) {
  return new Promise((resolve) => {
    const error = h('p', { class: 'dialog-error', role: 'alert', hidden: true });
    const inputs = {};
    const rows = fields.map((f) => {
      let input;
      if (f.type === 'textarea') input = h('textarea', { name: f.name, rows: 4 }, f.value ?? '');
      else if (f.type === 'select') {
        input = h('select', { name: f.name },
          f.options.map((o) => h('option', { value: o, selected: o === f.value }, o)));
      } else {
        input = h('input', { name: f.name, type: f.type || 'text', value: f.value ?? '', step: f.step, min: f.min, required: f.required, placeholder: f.placeholder, autocomplete: 'off' });
      }
      inputs[f.name] = input;
      return h('label', { class: 'field' }, h('span', {}, f.label), input);
    });
    const okButton = h('button', { type: 'submit', class: danger ? 'danger' : 'primary', value: 'ok' }, ok);
    const cancel = h('button', { type: 'button', onclick: () => close(null) }, 'Cancel');
    const form = h('form', { method: 'dialog' },
      h('h2', {}, title),
      text ? h('p', { class: 'dialog-text' }, text) : null,
      rows, error,
      h('div', { class: 'dialog-buttons' }, cancel, okButton));
    const dialog = h('dialog', { class: 'ask' }, form);
    let done = false;
    function close(value) {
      if (done) return;
      done = true;
      dialog.close();
      dialog.remove();
      resolve(value);
    }
    dialog.addEventListener('cancel', () => close(null));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const values = {};
      for (const [name, input] of Object.entries(inputs)) values[name] = input.value;
      okButton.disabled = true;
      try {
        const result = action ? await action(values) : values;
        close(result ?? true);
      } catch (e) {
        fill(error, refusalText(e));
        error.hidden = false;
        okButton.disabled = false;
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    const first = Object.values(inputs)[0];
    (first || okButton).focus();
  });
}

function shell() {
  const link = (hash, name, text) => h('a', { href: hash, class: 'nav', dataset: { nav: name } }, text);
  const dot = h('span', { class: 'live-dot', title: 'live updates: connecting', 'aria-label': 'live updates' });
  live.onStatus((up) => {
    dot.classList.toggle('up', up);
    dot.title = up ? 'live updates: connected' : 'live updates: reconnecting';
  });
  const who = `${me.token.kind} token ${shortId(me.token.id)}${me.token.allow_trigger ? '' : ' (read only)'}`;
  const projects = Object.keys(me.token.enabled_projects || {});
  return h('div', { class: 'shell' },
    h('header', { class: 'top' },
      h('a', { class: 'brand', href: '#/watches' }, h('img', { src: '/console/icon.svg', alt: '' }), 'reeve'),
      h('nav', {},
        link('#/watches', 'watches', 'Watches'),
        link('#/builds', 'builds', 'Builds'),
        me.admin ? link('#/audit', 'audit', 'Audit') : null,
        me.admin ? link('#/tokens', 'tokens', 'Tokens') : null),
      h('div', { class: 'who' },
        dot,
        h('span', { class: 'who-text', title: projects.length ? `projects: ${projects.join(', ')}` : 'every project' }, who),
        h('button', { type: 'button', class: 'signout', onclick: signOut }, 'Sign out'))),
    h('div', { id: 'toasts', class: 'toasts' }),
    h('main', { id: 'view' }));
}

async function render() {
  if (!me) return;
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  const r = route();
  for (const a of document.querySelectorAll('a.nav')) a.classList.toggle('active', a.dataset.nav === r.name);
  const main = document.getElementById('view');
  if (!main) return;
  main.replaceChildren();
  view = r;
  const ctx = {
    me,
    params: r.params,
    canAct: me.token.allow_trigger,
    navigate,
    toast,
    ask,
    refusalText,
    isCurrent: () => view === r,
  };
  try {
    cleanup = (await r.view.render(main, ctx)) || null;
  } catch (e) {
    if (view === r) fill(main, h('p', { class: 'error', role: 'alert' }, refusalText(e)));
  }
}

async function signIn(token) {
  session.set(token);
  try {
    me = await api('GET', '/whoami');
  } catch (e) {
    session.clear();
    me = null;
    throw e;
  }
  fill(root, shell());
  live.reset();
  live.start();
  await render();
}

function signOut() {
  live.reset();
  if (cleanup) cleanup();
  cleanup = null;
  me = null;
  session.clear();
  showSignIn();
}

function showSignIn(message) {
  fill(root, signin.render({ signIn, message }));
}

onUnauthorized(() => {
  if (!me) return;
  live.reset();
  if (cleanup) cleanup();
  cleanup = null;
  me = null;
  session.clear();
  showSignIn('The token stopped working (revoked or expired). Sign in again.');
});

window.addEventListener('hashchange', render);

(async () => {
  const token = session.token;
  if (!token) return showSignIn();
  try {
    await signIn(token);
  } catch (e) {
    showSignIn(refusalText(e));
  }
})();
