// One build: its job graph, restart and abort, and the selected job with its actions
// (restart with dependents, rerun, abort; each confirmed, a refusal's text shown) and its
// log, followed live while the job runs. The graph and the panel follow the event stream.

import { h, fill, badge, when, shortId } from '../dom.js';
import { api, stream, enc } from '../api.js';
import { onCommit, debounce } from '../live.js';
import { graph } from '../graph.js';

const ENDED = new Set(['finished', 'failure', 'error', 'skipped', 'killed']);

export async function render(main, ctx) {
  const { project } = ctx.params;
  const path = `/projects/${enc(project)}/builds/${enc(ctx.params.build)}`;
  let selected = ctx.params.job || null;
  let b = await api('GET', path);

  const head = h('div', { class: 'build-head' });
  const canvas = h('div', { class: 'graph-wrap' });
  const panel = h('aside', { class: 'job-panel' });
  const logBox = h('pre', { class: 'log', id: 'job-log', tabindex: 0 });
  const logState = h('p', { class: 'muted small log-state' });
  fill(main,
    h('p', { class: 'crumbs' }, h('a', { href: `#/builds/${enc(project)}` }, `${project} builds`), ' / ', `build ${shortId(b.id)}`),
    head,
    h('div', { class: 'build-body' }, canvas, panel),
    h('section', { class: 'log-section' }, h('h2', {}, 'Log'), logState, logBox));

  let logFor = null;
  let logAbort = null;

  function draw() {
    const jobs = b.jobs || [];
    fill(head,
      h('h1', {}, `Build #${b.number}.${b.restart_counter} `, badge(b.state)),
      h('div', { class: 'meta' },
        h('span', {}, 'project ', h('strong', {}, b.project)),
        h('span', {}, 'trigger ', h('strong', {}, b.trigger)),
        b.watch_id ? h('span', {}, 'watch ', h('code', {}, shortId(b.watch_id))) : null,
        b.restarted_from ? h('span', {}, 'restart of ', h('a', { href: `#/builds/${enc(project)}/${b.restarted_from}` }, shortId(b.restarted_from))) : null,
        h('span', {}, 'created ', when(b.created_at), ' by ', b.created_by),
        b.aborted ? badge('killed', 'aborted') : null),
      Object.keys(b.env || {}).length
        ? h('details', { class: 'env' }, h('summary', {}, 'Environment'),
          h('dl', {}, Object.entries(b.env).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])))
        : null,
      ctx.canAct ? h('div', { class: 'build-actions' },
        h('button', { type: 'button', id: 'restart-build', onclick: () => ctx.ask({
          title: `Restart build #${b.number}?`, text: 'A new generation of the whole build starts; this one stays as it is.', ok: 'Restart build',
          action: () => api('POST', `${path}/restart`),
        }).then((nb) => nb && nb.id && ctx.navigate(`#/builds/${enc(project)}/${nb.id}`)) }, 'Restart build'),
        b.state === 'running' ? h('button', { type: 'button', class: 'danger', id: 'abort-build', onclick: () => ctx.ask({
          title: `Abort build #${b.number}?`, text: 'Every queued and running job is killed.', ok: 'Abort build', danger: true,
          action: () => api('POST', `${path}/abort`),
        }).then((r) => r && ctx.toast(`killed ${r.aborted.length} job(s)`, 'ok')).finally(refresh) }, 'Abort build') : null)
        : null);
    const started = performance.now();
    fill(canvas, graph(jobs, { selected, onSelect: select }));
    canvas.dataset.renderMs = String(Math.round(performance.now() - started));
    drawPanel();
  }

  function select(job) {
    selected = job.id;
    history.replaceState(null, '', `#/builds/${enc(project)}/${b.id}/${job.id}`);
    draw();
  }

  function drawPanel() {
    const j = (b.jobs || []).find((x) => x.id === selected);
    if (!j) {
      fill(panel, h('p', { class: 'muted' }, 'Choose a job in the graph to see it and its log.'));
      followLog(null);
      return;
    }
    const byId = new Map(b.jobs.map((x) => [x.id, x]));
    const name = (id) => (byId.get(id) || { name: shortId(id) }).name;
    const act = (label, cls, title, text, run, danger = false) => h('button', {
      type: 'button', class: `${cls}${danger ? ' danger' : ''}`,
      onclick: () => ctx.ask({ title, text, ok: label, danger, action: run })
        .then((r) => r && ctx.toast(`${label.toLowerCase()}: ${j.name}`, 'ok'))
        .finally(refresh),
    }, label);
    const jobPath = `/projects/${enc(project)}/jobs/${j.id}`;
    fill(panel,
      h('h2', { class: 'job-name' }, j.name, ' ', badge(j.state)),
      j.superseded_by ? h('p', { class: 'muted' }, 'Superseded by ', h('a', { href: `#/builds/${enc(project)}/${b.id}/${j.superseded_by}` }, name(j.superseded_by))) : null,
      j.cloned_from ? h('p', { class: 'muted' }, 'Cloned from ', h('a', { href: `#/builds/${enc(project)}/${b.id}/${j.cloned_from}` }, name(j.cloned_from))) : null,
      h('dl', { class: 'facts' },
        h('dt', {}, 'run'), h('dd', {}, h('code', { class: 'run' }, j.run)),
        h('dt', {}, 'depends on'), h('dd', {}, j.depends_on.length ? j.depends_on.map((d) => `${d.job} (on ${d.on.join(', ')})`).join('; ') : '—'),
        h('dt', {}, 'created'), h('dd', {}, when(j.created_at)),
        h('dt', {}, 'started'), h('dd', {}, when(j.started_at)),
        h('dt', {}, 'finished'), h('dd', {}, when(j.finished_at)),
        h('dt', {}, 'exit code'), h('dd', {}, j.exit_code ?? '—'),
        j.message ? [h('dt', {}, 'message'), h('dd', { class: 'message' }, j.message)] : null),
      ctx.canAct ? h('div', { class: 'job-actions' },
        act('Restart', 'act-restart', `Restart ${j.name}?`, 'The job and everything downstream of it that is not superseded run again as clones.', () => api('POST', `${jobPath}/restart`)),
        act('Rerun', 'act-rerun', `Rerun ${j.name}?`, 'Only this job runs again; its dependents then depend on the clone.', () => api('POST', `${jobPath}/rerun`)),
        ENDED.has(j.state) ? null : act('Abort', 'act-abort', `Abort ${j.name}?`, 'The job is killed (its process group gets SIGTERM, then SIGKILL).', () => api('POST', `${jobPath}/abort`), true))
        : null);
    followLog(j);
  }

  function followLog(j) {
    if (!j) {
      if (logAbort) logAbort.abort();
      logAbort = null;
      logFor = null;
      logBox.replaceChildren();
      fill(logState, 'No job chosen.');
      return;
    }
    // The same job: the stream that runs keeps running. Another one (or a pruned log): anew.
    if (logFor === j.id) return;
    if (logAbort) logAbort.abort();
    logFor = j.id;
    logBox.replaceChildren();
    const mine = new AbortController();
    logAbort = mine;
    fill(logState, ENDED.has(j.state) ? `Output of ${j.name}.` : `Following ${j.name} live…`);
    logBox.dataset.job = j.id;
    logBox.dataset.done = 'false';
    stream(`/projects/${enc(project)}/jobs/${j.id}/log?follow=true`, {
      signal: mine.signal,
      onChunk(text) {
        const atEnd = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
        logBox.append(document.createTextNode(text));
        if (atEnd) logBox.scrollTop = logBox.scrollHeight;
      },
    }).then(() => {
      if (mine.signal.aborted) return;
      logBox.dataset.done = 'true';
      fill(logState, logBox.textContent ? `End of ${j.name}'s output.` : `${j.name} wrote no output.`);
    }).catch((e) => {
      if (mine.signal.aborted) return;
      logBox.dataset.done = 'true';
      fill(logState, ctx.refusalText(e));
    });
  }

  async function refresh() {
    try {
      const next = await api('GET', path);
      if (!ctx.isCurrent()) return;
      b = next;
      draw();
    } catch (e) {
      ctx.toast(ctx.refusalText(e));
    }
  }

  draw();
  const soon = debounce(refresh, 150);
  const stop = onCommit((c) => {
    if (c.project === project) soon();
  });
  return () => {
    stop();
    if (logAbort) logAbort.abort();
  };
}
