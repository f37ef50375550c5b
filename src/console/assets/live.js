// Follows GET /api/v1/events and hands each commit summary to whoever listens. The stream is
// read with fetch, not EventSource, because EventSource cannot send the token in a header
// (and the token never goes into a URL). After a drop it reconnects with Last-Event-ID, so
// no commit is missed.

import { stream } from './api.js';

const listeners = new Set();
const statusListeners = new Set();
let lastId = null;
let controller = null;

/** Calls `fn(summary)` for every commit; returns a function that stops it. */
export function onCommit(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Calls `fn(connected)` whenever the stream connects or drops. */
export function onStatus(fn) {
  statusListeners.add(fn);
}

function status(up) {
  for (const fn of statusListeners) fn(up);
}

export function start() {
  stop();
  const mine = new AbortController();
  controller = mine;
  (async () => {
    let delay = 500;
    while (!mine.signal.aborted) {
      let buffer = '';
      try {
        const extra = lastId === null ? {} : { 'Last-Event-ID': String(lastId) };
        status(true);
        await stream('/events', {
          extra,
          signal: mine.signal,
          onChunk(text) {
            delay = 500;
            buffer += text;
            let at;
            while ((at = buffer.search(/\r?\n\r?\n/)) >= 0) {
              const block = buffer.slice(0, at);
              buffer = buffer.slice(at).replace(/^\r?\n\r?\n/, '');
              dispatch(block);
            }
          },
        });
      } catch (e) {
        if (mine.signal.aborted) return;
        if (e.status === 401 || e.status === 403) {
          status(false);
          return;
        }
      }
      status(false);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
}

function dispatch(block) {
  let id = null;
  let data = '';
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith('id:')) id = line.slice(3).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trimStart();
  }
  if (id === null || !data) return;
  lastId = Number(id);
  let summary;
  try {
    summary = JSON.parse(data);
  } catch {
    return;
  }
  for (const fn of listeners) {
    try {
      fn(summary);
    } catch (e) {
      console.error(e);
    }
  }
}

export function stop() {
  if (controller) controller.abort();
  controller = null;
}

/** Forgets where the stream was (a new sign-in starts from the head). */
export function reset() {
  stop();
  lastId = null;
}

/** Calls `fn` at most once per `ms` while commits keep coming (for reloads). */
export function debounce(fn, ms = 250) {
  let timer = null;
  return (...args) => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn(...args);
    }, ms);
  };
}
