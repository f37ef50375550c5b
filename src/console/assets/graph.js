// A build's job graph as SVG: layered left to right by dependencies (a job's column is one
// past its deepest parent), each job coloured by its state, clones stacked under the job they
// were cloned from and joined to it by a dashed line (foo → foo.1 → foo.2), superseded jobs
// dimmed. Names are set as text, never as markup.

import { s } from './dom.js';

const W = 152;
const H = 38;
const GAP_X = 44;
const GAP_Y = 22;
const PAD = 16;

/** Columns and rows for every job. */
export function layout(jobs) {
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const depth = new Map();
  const visiting = new Set();
  function depthOf(j) {
    if (depth.has(j.id)) return depth.get(j.id);
    if (visiting.has(j.id)) return 0;
    visiting.add(j.id);
    let d = 0;
    for (const dep of j.depends_on) {
      const parent = byId.get(dep.job_id);
      if (parent) d = Math.max(d, depthOf(parent) + 1);
    }
    visiting.delete(j.id);
    depth.set(j.id, d);
    return d;
  }
  // A clone sits with the job it was cloned from: order each column by the chain's first job
  // (creation order), then by generation.
  const order = new Map(jobs.map((j, i) => [j.id, i]));
  function chain(j) {
    let root = j;
    let generation = 0;
    const seen = new Set();
    while (root.cloned_from && byId.has(root.cloned_from) && !seen.has(root.id)) {
      seen.add(root.id);
      root = byId.get(root.cloned_from);
      generation++;
    }
    return [order.get(root.id), generation];
  }
  const columns = [];
  for (const j of jobs) {
    const d = depthOf(j);
    (columns[d] ||= []).push(j);
  }
  const at = new Map();
  columns.forEach((col, x) => {
    col.sort((a, b) => {
      const [ra, ga] = chain(a);
      const [rb, gb] = chain(b);
      return ra - rb || ga - gb;
    });
    col.forEach((j, y) => at.set(j.id, { x: PAD + x * (W + GAP_X), y: PAD + y * (H + GAP_Y) }));
  });
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  return {
    at,
    width: PAD * 2 + Math.max(1, columns.length) * (W + GAP_X) - GAP_X,
    height: PAD * 2 + rows * (H + GAP_Y) - GAP_Y,
  };
}

function clip(name, n = 20) {
  return name.length > n ? `${name.slice(0, n - 1)}…` : name;
}

/** The graph as an <svg>; `onSelect(job)` when a job is clicked or chosen with the keyboard. */
export function graph(jobs, { selected, onSelect }) {
  const { at, width, height } = layout(jobs);
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const edges = s('g', { class: 'edges' });
  const clones = s('g', { class: 'clones' });
  const nodes = s('g', { class: 'nodes' });
  for (const j of jobs) {
    const to = at.get(j.id);
    for (const dep of j.depends_on) {
      const from = at.get(dep.job_id);
      if (!from) continue;
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x;
      const y2 = to.y + H / 2;
      const mid = (x1 + x2) / 2;
      const dim = j.superseded_by || (byId.get(dep.job_id) || {}).superseded_by;
      edges.append(s('path', { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: dim ? 'edge dim' : 'edge' }));
    }
    if (j.cloned_from && at.has(j.cloned_from)) {
      const from = at.get(j.cloned_from);
      const x = from.x + 10;
      clones.append(s('path', {
        d: `M${x},${from.y + H} C${x - 16},${from.y + H + 10} ${x - 16},${to.y - 10} ${x},${to.y}`,
        class: 'clone-edge',
        'marker-end': 'url(#clone-arrow)',
      }));
    }
    const classes = ['job', `st-${j.state}`];
    if (j.superseded_by) classes.push('superseded');
    if (j.id === selected) classes.push('selected');
    const title = s('title', {}, `${j.name}: ${j.state}${j.superseded_by ? ' (superseded)' : ''}`);
    const node = s('g', {
      class: classes.join(' '),
      transform: `translate(${to.x},${to.y})`,
      tabindex: 0,
      role: 'button',
      'aria-label': `${j.name} ${j.state}`,
      'data-id': j.id,
      'data-name': j.name,
      'data-state': j.state,
      onclick: () => onSelect(j),
      onkeydown: (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          onSelect(j);
        }
      },
    },
    title,
    s('rect', { width: W, height: H, rx: 6 }),
    s('circle', { cx: 14, cy: H / 2, r: 5, class: 'dot' }),
    s('text', { x: 26, y: 16, class: 'name' }, clip(j.name)),
    s('text', { x: 26, y: 30, class: 'state' }, j.superseded_by ? `${j.state} · superseded` : j.state));
    nodes.append(node);
  }
  const defs = s('defs', {},
    s('marker', { id: 'clone-arrow', viewBox: '0 0 10 10', refX: 8, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'clone-head' })));
  return s('svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `job graph of ${jobs.length} jobs` },
    defs, edges, clones, nodes);
}
