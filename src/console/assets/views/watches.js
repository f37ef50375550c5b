// Watches: a table with project and active filters, the next run counting down, the last
// run and its outcome, failing watches highlighted; create, pause (with a reason), resume,
// trigger, edit, delete; each watch's recent fires and their builds.

import { h, fill, badge, span, ago, every, shortId } from '../dom.js';
import { api, query, enc } from '../api.js';
import { onCommit, debounce } from '../live.js';

const filters = { project: '', active: false };
const open = new Set();

export async function render(main, ctx) {
  const projects = (await api('GET', '/projects')).projects.map((p) => p.id);
  const table = h('tbody');
  const count = h('span', { class: 'muted count' });
  const projectSelect = h('select', { id: 'watch-project', 'aria-label': 'project', onchange: () => { filters.project = projectSelect.value; reload(); } },
    h('option', { value: '' }, 'All projects'),
    projects.map((p) => h('option', { value: p, selected: p === filters.project }, p)));
  const activeBox = h('input', { type: 'checkbox', id: 'watch-active', checked: filters.active, onchange: () => { filters.active = activeBox.checked; reload(); } });
  const create = ctx.canAct
    ? h('button', { type: 'button', class: 'primary', id: 'new-watch', onclick: () => createWatch(ctx, projects, reload) }, 'New watch')
    : null;
  fill(main,
    h('div', { class: 'toolbar' },
      h('h1', {}, 'Watches'), count,
      h('div', { class: 'filters' },
        projectSelect,
        h('label', { class: 'check' }, activeBox, 'Active only'),
        create)),
    h('table', { class: 'grid watches' },
      h('thead', {}, h('tr', {},
        ['', 'Target', 'Project', 'Every', 'State', 'Next run', 'Last run', 'Failures', ctx.canAct ? 'Actions' : null]
          .filter((c) => c !== null).map((c) => h('th', {}, c)))),
      table));

  async function reload() {
    const all = [];
    let cursor = null;
    for (let i = 0; i < 10; i++) {
      const page = await api('GET', `/watches${query({ project: filters.project, active_only: filters.active, limit: 500, cursor })}`);
      all.push(...page.watches);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    if (!ctx.isCurrent()) return;
    fill(count, `${all.length} watch${all.length === 1 ? '' : 'es'}`);
    fill(table, all.length ? all.flatMap((w) => rows(w, ctx, reload)) : h('tr', {}, h('td', { colspan: 9, class: 'empty' }, 'No watches here yet.')));
  }
  await reload();

  const tick = setInterval(() => {
    for (const cell of main.querySelectorAll('[data-next]')) {
      const secs = (Date.parse(cell.dataset.next) - Date.now()) / 1000;
      cell.textContent = secs > 0 ? `in ${span(secs)}` : 'due now';
    }
  }, 1000);
  const stop = onCommit(debounce(() => { if (ctx.isCurrent()) reload().catch(() => {}); }, 300));
  return () => {
    clearInterval(tick);
    stop();
  };
}

function rows(w, ctx, reload) {
  const failing = w.consecutive_failures > 0;
  const expanded = open.has(w.id);
  const toggle = h('button', { type: 'button', class: 'link expand', 'aria-expanded': String(expanded), title: 'recent fires', onclick: () => { if (open.has(w.id)) open.delete(w.id); else open.add(w.id); reload(); } }, expanded ? '▾' : '▸');
  const next = w.next_run_at
    ? h('span', { dataset: { next: w.next_run_at }, title: w.next_run_at }, ago(w.next_run_at))
    : h('span', { class: 'muted' }, '—');
  const last = w.last_run
    ? h('span', { class: 'last-run' },
      badge(w.last_run.outcome),
      w.last_run.build_id ? h('a', { href: `#/builds/${enc(w.project)}/${w.last_run.build_id}`, class: 'build-link' }, `build ${shortId(w.last_run.build_id)}`) : null,
      h('span', { class: 'muted', title: w.last_run.at }, ago(w.last_run.at)))
    : h('span', { class: 'muted' }, 'never');
  const state = w.is_active
    ? badge('active')
    : h('span', {}, badge('paused'), w.reason ? h('span', { class: 'reason' }, w.reason) : null);
  const row = h('tr', { class: `watch${failing ? ' failing' : ''}${w.is_active ? '' : ' paused'}`, dataset: { id: w.id, uri: w.to_uri } },
    h('td', {}, toggle),
    h('td', { class: 'uri' }, h('span', { class: 'to-uri' }, w.to_uri), h('div', { class: 'muted small' }, w.source)),
    h('td', {}, w.project),
    h('td', {}, every(w.watch_interval)),
    h('td', { class: 'state' }, state),
    h('td', { class: 'next' }, next),
    h('td', {}, last),
    h('td', { class: failing ? 'failures bad' : 'failures' }, String(w.consecutive_failures),
      w.skipped_overlap ? h('div', { class: 'muted small' }, `${w.skipped_overlap} skipped`) : null,
      w.missed ? h('div', { class: 'muted small' }, `${w.missed} missed`) : null),
    ctx.canAct ? h('td', { class: 'actions' }, actions(w, ctx, reload)) : null);
  if (!expanded) return [row];
  const fires = h('div', { class: 'fires' }, h('span', { class: 'muted' }, 'Loading recent fires…'));
  recentFires(w, fires).catch((e) => fill(fires, h('span', { class: 'error' }, ctx.refusalText(e))));
  return [row, h('tr', { class: 'fires-row' }, h('td', { colspan: 9 }, fires))];
}

async function recentFires(w, into) {
  const page = await api('GET', `/projects/${enc(w.project)}/builds?limit=200`);
  const mine = page.builds.filter((b) => b.watch_id === w.id).slice(0, 10);
  const instruction = w.instruction ? h('p', { class: 'instruction' }, h('span', { class: 'muted' }, 'Instruction: '), w.instruction) : null;
  if (!mine.length) {
    fill(into, instruction, h('span', { class: 'muted' }, w.last_run ? 'No builds of this watch among the project\u2019s recent builds.' : 'This watch has not fired yet.'));
    return;
  }
  fill(into, instruction, h('h3', {}, 'Recent fires'),
    h('ul', { class: 'fire-list' }, mine.map((b) => h('li', {},
      badge(b.state),
      h('a', { href: `#/builds/${enc(b.project)}/${b.id}` }, `#${b.number}.${b.restart_counter}`),
      h('span', { class: 'muted', title: b.created_at }, ago(b.created_at))))));
}

function actions(w, ctx, reload) {
  const act = async (what, fn) => {
    try {
      await fn();
      ctx.toast(what, 'ok');
    } catch (e) {
      ctx.toast(ctx.refusalText(e));
    }
    reload();
  };
  const path = `/watches/${w.id}`;
  return [
    w.is_active
      ? h('button', { type: 'button', class: 'act-pause', onclick: () => ctx.ask({
        title: `Pause ${w.to_uri}`, text: 'It keeps its interval; resuming starts counting from then.',
        fields: [{ name: 'reason', label: 'Reason', value: '', placeholder: 'why it is paused' }], ok: 'Pause',
        action: (v) => api('PATCH', path, { body: { is_active: false, reason: v.reason || null }, ifMatch: w.version }),
      }).then((r) => r && ctx.toast(`paused ${w.to_uri}`, 'ok')).finally(reload) }, 'Pause')
      : h('button', { type: 'button', class: 'act-resume', onclick: () => act(`resumed ${w.to_uri}`, () => api('PATCH', path, { body: { is_active: true }, ifMatch: w.version })) }, 'Resume'),
    h('button', { type: 'button', class: 'act-trigger', onclick: () => act(`triggered ${w.to_uri}`, () => api('POST', `${path}/trigger`)) }, 'Trigger'),
    h('button', { type: 'button', class: 'act-edit', onclick: () => ctx.ask({
      title: `Edit ${w.to_uri}`,
      fields: [
        { name: 'interval', label: 'Every (minutes)', type: 'number', step: 'any', min: 0, value: String(w.watch_interval), required: true },
        { name: 'instruction', label: 'Instruction', type: 'textarea', value: w.instruction || '' },
      ],
      ok: 'Save',
      action: (v) => {
        const body = {};
        const interval = Number(v.interval);
        if (interval !== w.watch_interval) body.watch_interval = interval;
        const instruction = v.instruction.trim() ? v.instruction : null;
        if (instruction !== (w.instruction ?? null)) body.instruction = instruction;
        if (!Object.keys(body).length) return true;
        return api('PATCH', path, { body, ifMatch: w.version });
      },
    }).then((r) => r && ctx.toast(`saved ${w.to_uri}`, 'ok')).finally(reload) }, 'Edit'),
    h('button', { type: 'button', class: 'act-delete danger', onclick: () => ctx.ask({
      title: `Delete ${w.to_uri}?`, text: 'The watch stops firing and is gone; its builds and its audit trail stay.', ok: 'Delete', danger: true,
      action: () => api('DELETE', path, { ifMatch: w.version }),
    }).then((r) => r && ctx.toast(`deleted ${w.to_uri}`, 'ok')).finally(reload) }, 'Delete'),
  ];
}

function createWatch(ctx, projects, reload) {
  if (!projects.length) {
    ctx.toast('There is no project to put a watch in; an admin creates projects (reeve project create).');
    return;
  }
  ctx.ask({
    title: 'New watch',
    fields: [
      { name: 'project', label: 'Project', type: 'select', options: projects, value: filters.project || projects[0] },
      { name: 'source', label: 'Source (URI)', value: '', required: true, placeholder: 'https://git.example.com/docs' },
      { name: 'to_uri', label: 'Target (URI)', value: '', required: true, placeholder: 'viking://res/docs' },
      { name: 'interval', label: 'Every (minutes)', type: 'number', step: 'any', min: 0, value: '60', required: true },
      { name: 'reason', label: 'Reason', value: '' },
      { name: 'instruction', label: 'Instruction', type: 'textarea', value: '' },
    ],
    ok: 'Create',
    action: (v) => api('POST', '/watches', {
      body: {
        project: v.project,
        source: v.source.trim(),
        to_uri: v.to_uri.trim(),
        watch_interval: Number(v.interval),
        reason: v.reason.trim() || undefined,
        instruction: v.instruction.trim() || undefined,
      },
    }),
  }).then((w) => {
    if (w && w.id) ctx.toast(`created ${w.to_uri}`, 'ok');
  }).finally(reload);
}
