// Building the page. Everything the API returns reaches the page as text nodes or attribute
// values, never as markup: the console never asks the browser to parse HTML.

/** An element with properties, listeners (`onclick: fn`) and children (strings become text). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element; attributes only. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' || k === 'checked' || k === 'selected' || k === 'disabled') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A state as a coloured badge (`finished`, `failure`, `paused`, ...). */
export function badge(state, text) {
  return h('span', { class: `badge st-${String(state).replace(/[^a-z_]/g, '')}` }, text ?? state);
}

/** "3m 20s", "2h 5m", "4d 1h" for a number of seconds. */
export function span(secs) {
  secs = Math.max(0, Math.round(secs));
  const d = Math.floor(secs / 86400), hr = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60), sec = secs % 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}

/** "5m ago" / "in 5m" for an RFC 3339 time. */
export function ago(iso) {
  if (!iso) return '—';
  const secs = (Date.now() - Date.parse(iso)) / 1000;
  return secs >= 0 ? `${span(secs)} ago` : `in ${span(-secs)}`;
}

/** A local date and time for an RFC 3339 time, with the exact time as its tooltip. */
export function when(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  return h('time', { datetime: iso, title: iso }, d.toLocaleString());
}

export function shortId(id) {
  return id ? String(id).slice(-8) : '';
}

/** Minutes as people say them: "every 90m", "every 1.5h". */
export function every(minutes) {
  if (minutes < 1) return `${Math.round(minutes * 60)}s`;
  if (minutes < 120) return `${+minutes.toFixed(2)}m`;
  if (minutes < 2880) return `${+(minutes / 60).toFixed(2)}h`;
  return `${+(minutes / 1440).toFixed(2)}d`;
}
