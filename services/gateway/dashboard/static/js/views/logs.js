// Log search (QueryLogs) and live tail (TailLogs stream).
import {api, query, stream} from '../api.js';
import {h, replace} from '../dom.js';
import {label, time} from '../format.js';

const LEVELS = ['', 'LOG_LEVEL_DEBUG', 'LOG_LEVEL_INFO', 'LOG_LEVEL_WARN', 'LOG_LEVEL_ERROR'];
const SINCE = [['15 minutes', '900s'], ['1 hour', '3600s'], ['6 hours', '21600s'], ['24 hours', '86400s'], ['7 days', '604800s']];
const MAX_ROWS = 500;

export function renderLogs(ctx) {
  const contains = h('input', {type: 'search', name: 'contains', placeholder: 'text to find', 'data-testid': 'log-query', size: 30});
  const level = h('select', {name: 'min_level', 'aria-label': 'minimum level'}, LEVELS.map((l) => h('option', {value: l}, l ? label(l, 'LOG_LEVEL_') : 'any')));
  const source = h('select', {name: 'source', 'aria-label': 'source'}, h('option', {value: ''}, 'all sources'));
  const since = h('select', {name: 'since', 'aria-label': 'since'}, SINCE.map(([n, v], i) => h('option', {value: v, selected: i === 1}, n)));
  const caseless = h('input', {type: 'checkbox', name: 'ignore_case', checked: true});
  const searchBtn = h('button', {type: 'submit', 'data-testid': 'log-search'}, 'Search');
  const tailBtn = h('button', {type: 'button', class: 'secondary', 'data-testid': 'log-tail'}, 'Live tail');
  const status = h('p', {class: 'muted small', 'data-testid': 'log-status'});
  const body = h('tbody', {'data-testid': 'log-results'});
  const form = h('form', {class: 'filters'},
    h('div', null, h('label', null, 'Contains'), contains),
    h('div', null, h('label', null, 'Level at least'), level),
    h('div', null, h('label', null, 'Source'), source),
    h('div', null, h('label', null, 'Since'), since),
    h('div', null, h('label', null, 'Any case'), caseless),
    searchBtn, tailBtn);
  ctx.root.append(h('h1', null, 'Logs'), h('section', {class: 'card'}, form, status,
    h('table', null, h('thead', null, h('tr', null, ['time', 'level', 'source', 'message'].map((c) => h('th', null, c)))), body)));

  api('/v1/logs/sources', {signal: ctx.signal}).then((res) => {
    for (const src of res.sources || []) {
      const name = src.source;
      if (name) source.append(h('option', {value: name}, name));
    }
  }).catch(ctx.reportError);

  const filters = () => ({
    contains: contains.value.trim(),
    min_level: level.value,
    sources: source.value,
    ignore_case: caseless.checked ? 'true' : '',
  });

  const row = (rec) => h('tr', {'data-testid': 'log-row'},
    h('td', {class: 'mono'}, time(rec.time)),
    h('td', {class: `lvl-${rec.level || ''}`}, label(rec.level, 'LOG_LEVEL_')),
    h('td', null, rec.source || '—'),
    h('td', {class: 'msg'}, rec.message || ''));

  let tail = null;
  function stopTail() {
    if (tail) { tail.abort(); tail = null; }
    tailBtn.textContent = 'Live tail';
  }
  ctx.signal.addEventListener('abort', stopTail);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    stopTail();
    status.textContent = 'Searching…';
    try {
      const res = await api(`/v1/logs${query({...filters(), since: since.value, page_size: 200})}`, {signal: ctx.signal});
      const recs = res.records || [];
      replace(body, recs.map(row));
      const scanned = res.stats?.records_scanned;
      status.textContent = `${recs.length} record${recs.length === 1 ? '' : 's'}${res.next_page_token ? ' (newest shown; more match)' : ''}${scanned ? `, ${scanned} scanned` : ''}.`;
    } catch (err) {
      status.textContent = '';
      ctx.reportError(err);
    }
  });

  tailBtn.addEventListener('click', () => {
    if (tail) { stopTail(); status.textContent = 'Tail stopped.'; return; }
    tail = new AbortController();
    const signal = AbortSignal.any([ctx.signal, tail.signal]);
    tailBtn.textContent = 'Stop tail';
    replace(body);
    status.textContent = 'Following new records…';
    let count = 0;
    ({...ctx, signal}).follow(async () => {
      await stream(`/v1/logs:tail${query({...filters(), since: count ? undefined : '300s', backfill_limit: count ? undefined : 50})}`, (res) => {
        for (const rec of res.records || []) {
          body.prepend(row(rec));
          count++;
        }
        while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
        status.textContent = `Following: ${count} record${count === 1 ? '' : 's'} so far${res.dropped ? `, ${res.dropped} dropped` : ''}.`;
      }, {signal});
      return 'again';
    });
  });
}
