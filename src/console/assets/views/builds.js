// A project's builds, newest first, their states kept live from the event stream.

import { h, fill, badge, ago, shortId } from '../dom.js';
import { api, enc } from '../api.js';
import { onCommit, debounce } from '../live.js';

let lastProject = '';

export async function render(main, ctx) {
  const projects = (await api('GET', '/projects')).projects.map((p) => p.id);
  const project = ctx.params.project || lastProject || projects[0] || '';
  if (!project) {
    fill(main, h('h1', {}, 'Builds'), h('p', { class: 'empty' }, 'There are no projects this token can see.'));
    return null;
  }
  if (!ctx.params.project) {
    history.replaceState(null, '', `#/builds/${enc(project)}`);
  }
  lastProject = project;
  const select = h('select', { id: 'build-project', 'aria-label': 'project', onchange: () => ctx.navigate(`#/builds/${enc(select.value)}`) },
    projects.map((p) => h('option', { value: p, selected: p === project }, p)));
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Older builds');
  const trigger = ctx.canAct
    ? h('button', { type: 'button', class: 'primary', id: 'trigger-build', onclick: () => ctx.ask({
      title: `Trigger a build of ${project}`, text: 'It runs the project\u2019s default pipeline.', ok: 'Trigger',
      action: () => api('POST', `/projects/${enc(project)}/builds`, { body: {} }),
    }).then((b) => b && b.id && ctx.navigate(`#/builds/${enc(project)}/${b.id}`)) }, 'Trigger build')
    : null;
  fill(main,
    h('div', { class: 'toolbar' }, h('h1', {}, 'Builds'), h('div', { class: 'filters' }, select, trigger)),
    h('table', { class: 'grid builds' },
      h('thead', {}, h('tr', {}, ['Build', 'State', 'Trigger', 'Created', 'By'].map((c) => h('th', {}, c)))),
      body),
    more);

  let shown = 50;
  async function reload() {
    const page = await api('GET', `/projects/${enc(project)}/builds?limit=${Math.min(shown, 200)}`);
    if (!ctx.isCurrent()) return;
    fill(body, page.builds.length
      ? page.builds.map((b) => h('tr', { class: `build st-row-${b.state}`, dataset: { id: b.id } },
        h('td', {}, h('a', { href: `#/builds/${enc(project)}/${b.id}`, class: 'build-link' }, `#${b.number}.${b.restart_counter}`)),
        h('td', { class: 'state' }, badge(b.state)),
        h('td', {}, b.trigger, b.watch_id ? h('span', { class: 'muted small' }, ` watch ${shortId(b.watch_id)}`) : null),
        h('td', { title: b.created_at }, ago(b.created_at)),
        h('td', { class: 'muted small' }, b.created_by)))
      : h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No builds yet.')));
    more.hidden = !page.next_cursor || shown >= 200;
  }
  more.addEventListener('click', () => {
    shown += 50;
    reload().catch((e) => ctx.toast(ctx.refusalText(e)));
  });
  await reload();
  const soon = debounce(() => {
    if (ctx.isCurrent()) reload().catch(() => {});
  }, 200);
  return onCommit((c) => {
    if (c.project === project) soon();
  });
}
