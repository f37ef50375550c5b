// Tokens, for admins: who may do what, and revoking. Secrets are never shown here (reeve
// only shows a secret once, to whoever created it).

import { h, fill, badge, when, shortId } from '../dom.js';
import { api } from '../api.js';

export async function render(main, ctx) {
  const body = h('tbody');
  fill(main,
    h('div', { class: 'toolbar' }, h('h1', {}, 'Tokens'), h('span', { class: 'muted' }, 'Create tokens with reeve token create; each secret is shown once.')),
    h('table', { class: 'grid tokens' },
      h('thead', {}, h('tr', {}, ['Token', 'Kind', 'Description', 'Projects', 'May change', 'Expires', 'Created', 'State', ''].map((c) => h('th', {}, c)))),
      body));
  async function reload() {
    const { tokens } = await api('GET', '/tokens');
    if (!ctx.isCurrent()) return;
    fill(body, tokens.map((t) => h('tr', { class: t.revoked_at ? 'revoked' : '' },
      h('td', {}, h('code', { title: t.id }, shortId(t.id))),
      h('td', {}, t.kind),
      h('td', {}, t.description),
      h('td', { class: 'small' }, Object.keys(t.enabled_projects).join(', ') || 'all'),
      h('td', {}, t.allow_trigger ? 'yes' : 'no'),
      h('td', {}, when(t.expires_at)),
      h('td', {}, when(t.created_at)),
      h('td', {}, t.revoked_at ? badge('killed', 'revoked') : badge('active')),
      h('td', {}, ctx.canAct && !t.revoked_at && t.id !== ctx.me.token.id
        ? h('button', { type: 'button', class: 'danger small', onclick: () => ctx.ask({
          title: `Revoke token ${shortId(t.id)}?`, text: t.description, ok: 'Revoke', danger: true,
          action: () => api('DELETE', `/tokens/${t.id}`),
        }).then((r) => r && ctx.toast('revoked', 'ok')).finally(() => reload().catch(() => {})) }, 'Revoke')
        : null))));
  }
  await reload();
  return null;
}
