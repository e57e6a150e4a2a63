// Pipelines and their runs; a run's steps (WatchRun stream) and its live
// log (StreamRunLogs with follow).
import {api, query, stream} from '../api.js';
import {h, replace, table, confirmButton} from '../dom.js';
import {label, tone, num, time, ago, between, clock} from '../format.js';

const RUN_ACTIVE = new Set(['RUN_STATE_QUEUED', 'RUN_STATE_RUNNING']);
const READ_ONLY = 'Needs the operator role; this token is read-only.';
const runHref = (id) => `#/runs/${encodeURIComponent(id)}`;
const badge = (v, prefix, props = {}) => h('span', {class: ['badge', tone(v)], ...props}, label(v, prefix));

export function renderPipelines(ctx) {
  const pipelinesBox = h('section', {class: 'card'}, h('h2', null, 'Pipelines'), h('p', {class: 'muted'}, 'Loading…'));
  const runsBox = h('section', {class: 'card'}, h('h2', null, 'Recent runs'), h('p', {class: 'muted'}, 'Loading…'));
  ctx.root.append(h('h1', null, 'Pipelines'), pipelinesBox, runsBox);

  const run = async (name) => {
    try {
      const res = await api(`/v1/pipelines/${encodeURIComponent(name)}:run`, {method: 'POST', body: {manual: true}, signal: ctx.signal});
      ctx.flash(`Started ${name} #${res.run.number}`);
      location.hash = runHref(res.run.id);
    } catch (err) {
      ctx.reportError(err);
    }
  };

  ctx.every(3000, async () => {
    const [pl, rs] = await Promise.all([
      api('/v1/pipelines?page_size=100', {signal: ctx.signal}),
      api(`/v1/runs${query({page_size: 25})}`, {signal: ctx.signal}),
    ]);
    replace(pipelinesBox, h('h2', null, 'Pipelines'), table(['pipeline', 'description', 'last run', 'running', 'queued', ''], (pl.pipelines || []).map((p) => {
      const st = p.status || {};
      return {testid: `pipeline-row-${p.name}`, cells: [
        p.name, p.spec?.description || '',
        st.last_run_id ? h('a', {href: runHref(st.last_run_id)}, `#${st.last_run_number} `, badge(st.last_run_state, 'RUN_STATE_')) : '—',
        num(st.running_runs), num(st.queued_runs),
        h('button', {type: 'button', 'data-testid': `run-${p.name}`, disabled: !ctx.canOperate || p.paused, title: ctx.canOperate ? 'Start a run' : READ_ONLY,
          onclick: (ev) => { ev.stopPropagation(); run(p.name); }}, 'Run'),
      ]};
    }), 'No pipelines yet.'));
    replace(runsBox, h('h2', null, 'Recent runs'), table(['run', 'state', 'trigger', 'started', 'took', 'message'], (rs.runs || []).map((r) => ({
      testid: `run-row-${r.id}`, onclick: () => { location.hash = runHref(r.id); }, cells: [
        h('a', {href: runHref(r.id)}, `${r.pipeline} #${r.number}`), badge(r.state, 'RUN_STATE_'),
        label(r.trigger?.kind, 'TRIGGER_KIND_'), ago(r.start_time || r.create_time),
        r.start_time ? between(r.start_time, r.end_time) : '—', r.message || '',
      ]})), 'No runs yet.'));
  });
}

export function renderRun(ctx, id) {
  const base = `/v1/runs/${encodeURIComponent(id)}`;
  const head = h('div', {class: 'row'}, h('h1', null, 'Run'));
  const info = h('section', {class: 'card'}, h('p', {class: 'muted'}, 'Loading…'));
  const steps = h('section', {class: 'card'}, h('h2', null, 'Steps'));
  const log = h('pre', {class: 'log', 'data-testid': 'run-log', 'aria-live': 'off'});
  const logState = h('span', {class: 'muted small', 'data-testid': 'log-state'}, 'connecting…');
  ctx.root.append(h('p', null, h('a', {href: '#/pipelines'}, '← Pipelines')), head, h('div', {class: 'grid'}, info, steps),
    h('section', {class: 'card'}, h('div', {class: 'row'}, h('h2', null, 'Log'), h('span', {class: 'spacer'}), logState), log));

  function drawRun(r) {
    const cancel = confirmButton('Cancel', async () => {
      try {
        await api(`${base}:cancel`, {method: 'POST', body: {}, signal: ctx.signal});
        ctx.flash('Cancel requested');
      } catch (err) { ctx.reportError(err); }
    }, {'data-testid': 'cancel-run', disabled: !ctx.canOperate || !RUN_ACTIVE.has(r.state), title: ctx.canOperate ? 'Cancel this run' : READ_ONLY});
    replace(head, h('h1', null, `${r.pipeline} #${r.number}`), badge(r.state, 'RUN_STATE_', {'data-testid': 'run-state', 'data-state': r.state}),
      h('span', {class: 'spacer'}), cancel);
    replace(info, h('h2', null, 'Run'), h('dl', {class: 'kv'},
      h('dt', null, 'ID'), h('dd', {class: 'mono'}, r.id),
      h('dt', null, 'Trigger'), h('dd', null, label(r.trigger?.kind, 'TRIGGER_KIND_'), r.trigger?.actor ? ` by ${r.trigger.actor}` : ''),
      r.trigger?.ref ? [h('dt', null, 'Ref'), h('dd', {class: 'mono'}, r.trigger.ref)] : null,
      h('dt', null, 'Created'), h('dd', null, time(r.create_time)),
      h('dt', null, 'Duration'), h('dd', null, r.start_time ? between(r.start_time, r.end_time) : '—'),
      r.message ? [h('dt', null, 'Message'), h('dd', null, r.message)] : null));
    replace(steps, h('h2', null, 'Steps'), table(['step', 'stage', 'state', 'attempts', 'took', 'message'], (r.steps || []).map((st) => ({
      testid: `step-${st.id || st.name}`, cells: [
        st.id || st.name, st.stage || '—', badge(st.state, 'STEP_STATE_'), (st.attempts || []).length,
        st.start_time ? between(st.start_time, st.end_time) : '—', st.message || '',
      ]})), 'No steps.'));
  }

  // The run's state: a WatchRun stream, reopened after a break.
  ctx.follow(async () => {
    let last = null;
    await stream(`${base}:watch`, (res) => { if (res.run) { last = res.run; drawRun(res.run); } }, {signal: ctx.signal});
    if (!last) drawRun((await api(base, {signal: ctx.signal})).run);
    return last && !RUN_ACTIVE.has(last.state) ? 'done' : 'again';
  });

  // The log: every stored line, then new ones until the run finishes;
  // after a break it resumes after the last line it has.
  let afterSeq = 0;
  ctx.follow(async () => {
    logState.textContent = 'live';
    await stream(`${base}/logs${query({follow: true, after_seq: afterSeq || undefined})}`, (res) => {
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      for (const line of res.lines || []) {
        afterSeq = Math.max(afterSeq, Number(line.seq || 0));
        log.append(h('span', {class: line.stream === 'LOG_STREAM_STDERR' ? 'stderr' : null, 'data-seq': line.seq},
          h('span', {class: 'step'}, `${clock(line.time)} [${line.step}] `), line.text, line.partial ? '' : '\n'));
      }
      if (atBottom) log.scrollTop = log.scrollHeight;
    }, {signal: ctx.signal});
    logState.textContent = 'ended';
    return 'done';
  });
}
