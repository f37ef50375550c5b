// The audit trail, newest first, with filters (project, principal, plane, outcome, time),
// each entry's seq and hash, and the head of the log (seq and hash) to keep as an anchor.
// Commit times never go backwards, so a time filter is a seq found by bisection.

import { h, fill, badge, when, ago } from '../dom.js';
import { api, query } from '../api.js';
import { onCommit, debounce } from '../live.js';

const PLANES = ['', 'rest', 'web', 'cli', 'mcp', 'scheduler', 'runner', 'system'];
const filters = { project: '', principal: '', plane: '', outcome: '', from: '', until: '' };
const PAGE = 200;

/** The seq of the last commit before `ms` (0 if none): bisection over unfiltered pages. */
async function seqBefore(ms, head) {
  let lo = 0;
  let hi = head;
  while (lo < hi) {
    const mid = Math.floor((lo + hi + 1) / 2);
    const page = await api('GET', `/audit?since_seq=${mid - 1}&limit=1`);
    const e = page.entries[0];
    if (e && Date.parse(e.at) < ms) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function op(command) {
  if (typeof command === 'string') return command;
  return Object.keys(command || {})[0] || '';
}

export async function render(main, ctx) {
  const headBox = h('div', { class: 'anchor' });
  const list = h('tbody');
  const status = h('p', { class: 'muted small' });
  const input = (name, label, type = 'text', placeholder = '') => {
    const el = h('input', { name, type, value: filters[name], placeholder, 'aria-label': label, id: `audit-${name}` });
    return h('label', { class: 'field inline' }, h('span', {}, label), el);
  };
  const select = (name, label, options) => h('label', { class: 'field inline' }, h('span', {}, label),
    h('select', { name, id: `audit-${name}` }, options.map((o) => h('option', { value: o, selected: o === filters[name] }, o || 'any'))));
  const form = h('form', { class: 'audit-filters' },
    input('project', 'Project'),
    input('principal', 'Principal', 'text', 'token:<id> or system'),
    select('plane', 'Plane', PLANES),
    select('outcome', 'Outcome', ['', 'accepted', 'rejected']),
    input('from', 'From', 'datetime-local'),
    input('until', 'Until', 'datetime-local'),
    h('button', { type: 'submit', class: 'primary' }, 'Filter'));
  const more = h('button', { type: 'button', hidden: true, id: 'audit-more' }, 'Older entries');
  fill(main,
    h('div', { class: 'toolbar' }, h('h1', {}, 'Audit trail')),
    headBox, form, status,
    h('table', { class: 'grid audit' },
      h('thead', {}, h('tr', {}, ['Seq', 'When', 'Plane', 'Principal', 'Command', 'Target', 'Project', 'Outcome', 'Hash'].map((c) => h('th', {}, c)))),
      list),
    more);

  async function showHead() {
    const d = await api('GET', '/state/digest');
    const anchor = `${d.seq}:${d.head_hash}`;
    const copy = h('button', { type: 'button', class: 'small', onclick: async () => {
      try {
        await navigator.clipboard.writeText(anchor);
        ctx.toast('copied the anchor', 'ok');
      } catch {
        ctx.toast('the browser did not allow copying; select the text instead');
      }
    } }, 'Copy');
    fill(headBox,
      h('span', { class: 'muted' }, 'Head of the log '),
      h('code', { id: 'head-anchor', class: 'hash' }, anchor), ' ', copy,
      h('div', { class: 'muted small' }, 'Keep it where reeve cannot write; later, ',
        h('code', {}, `reeve audit verify --expect-head ${d.seq}:…`), ' proves the log still holds it.'));
    return d.seq;
  }

  // Pages are read oldest first from a seq; they are shown newest first. `windowStart` is
  // where the shown window begins; "Older entries" moves it back.
  let entries = [];
  let windowStart = 0;
  let floor = 0;
  let until = Infinity;
  let reading = false;

  async function readFrom(since, upto) {
    const out = [];
    let at = since;
    for (;;) {
      const page = await api('GET', `/audit${query({ since_seq: at, limit: 1000, project: filters.project, principal: filters.principal, plane: filters.plane, outcome: filters.outcome })}`);
      for (const e of page.entries) if (e.seq <= upto && Date.parse(e.at) < until) out.push(e);
      if (!page.next_since || page.next_since >= upto) break;
      at = page.next_since;
    }
    return out;
  }

  async function load() {
    reading = true;
    try {
      const head = await showHead();
      until = filters.until ? Date.parse(filters.until) : Infinity;
      floor = filters.from ? await seqBefore(Date.parse(filters.from), head) : 0;
      let upto = head;
      if (Number.isFinite(until)) upto = await seqBefore(until, head);
      // Widen the window back from the head until it holds a page of matches (or the floor).
      entries = [];
      let span = PAGE;
      windowStart = Math.max(floor, upto - span);
      for (;;) {
        entries = await readFrom(windowStart, upto);
        if (entries.length >= PAGE || windowStart <= floor) break;
        span *= 4;
        windowStart = Math.max(floor, upto - span);
      }
      show();
    } finally {
      reading = false;
    }
  }

  async function older() {
    if (windowStart <= floor) return;
    const upto = windowStart;
    windowStart = Math.max(floor, windowStart - PAGE * 4);
    const earlier = await readFrom(windowStart, upto);
    entries = earlier.concat(entries);
    show();
  }

  async function newer() {
    if (reading || filters.until) return;
    const last = entries.length ? entries[entries.length - 1].seq : windowStart;
    const head = await showHead();
    const fresh = await readFrom(last, head);
    entries = entries.concat(fresh.filter((e) => e.seq > last));
    show();
  }

  function show() {
    if (!ctx.isCurrent()) return;
    const rows = entries.slice().reverse();
    fill(status, `${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}${windowStart > floor ? ` after seq ${windowStart}` : ''}`);
    fill(list, rows.length ? rows.map((e) => h('tr', { class: e.outcome === 'rejected' ? 'rejected' : '', dataset: { seq: e.seq, plane: e.plane } },
      h('td', { class: 'num' }, String(e.seq)),
      h('td', { title: e.at }, when(e.at), h('div', { class: 'muted small' }, ago(e.at))),
      h('td', {}, badge(`plane-${e.plane}`, e.plane)),
      h('td', { class: 'small' }, e.principal),
      h('td', {}, h('details', {}, h('summary', {}, op(e.command)), h('pre', { class: 'json' }, JSON.stringify(e.command, null, 2)))),
      h('td', { class: 'small' }, e.target || '—'),
      h('td', {}, e.project || '—'),
      h('td', {}, badge(e.outcome), e.code ? h('div', { class: 'small' }, e.code) : null, e.reason ? h('div', { class: 'muted small reason' }, e.reason) : null),
      h('td', {}, h('code', { class: 'hash', title: e.hash }, e.hash.slice(0, 12)))))
      : h('tr', {}, h('td', { colspan: 9, class: 'empty' }, 'No entries match.')));
    more.hidden = windowStart <= floor;
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    for (const el of form.elements) if (el.name) filters[el.name] = el.value.trim();
    load().catch((e) => ctx.toast(ctx.refusalText(e)));
  });
  more.addEventListener('click', () => older().catch((e) => ctx.toast(ctx.refusalText(e))));
  await load();
  return onCommit(debounce(() => {
    if (ctx.isCurrent()) newer().catch(() => {});
  }, 400));
}
