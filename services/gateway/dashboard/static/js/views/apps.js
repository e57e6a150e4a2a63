// Applications, their environments and rollouts: live progress of the
// active rollout (WatchRollout stream) with promote, abort and rollback.
import {api, query, stream} from '../api.js';
import {h, replace, table, confirmButton} from '../dom.js';
import {label, tone, num, time, ago, between} from '../format.js';

const ACTIVE = new Set(['ROLLOUT_PHASE_PENDING', 'ROLLOUT_PHASE_PROGRESSING', 'ROLLOUT_PHASE_PAUSED', 'ROLLOUT_PHASE_PROMOTING', 'ROLLOUT_PHASE_VERIFYING', 'ROLLOUT_PHASE_ROLLING_BACK']);
const READ_ONLY = 'Needs the operator role; this token is read-only.';

const appHref = (name) => `#/apps/${encodeURIComponent(name)}`;
const badge = (v, prefix, props = {}) => h('span', {class: ['badge', tone(v)], ...props}, label(v, prefix));

export function renderApps(ctx) {
  const box = h('div', {class: 'card'}, h('p', {class: 'muted'}, 'Loading…'));
  ctx.root.append(h('h1', null, 'Applications'), box);
  ctx.every(3000, async () => {
    const res = await api('/v1/applications', {signal: ctx.signal});
    const rows = [];
    for (const app of res.applications || []) {
      for (const env of app.environments?.length ? app.environments : [{name: 'default'}]) {
        const st = env.status || {};
        rows.push({testid: `app-row-${app.name}`, onclick: () => { location.hash = appHref(app.name); }, cells: [
          h('a', {href: appHref(app.name)}, app.name), env.name, st.current_revision ? `r${st.current_revision}` : '—',
          `${num(st.ready_replicas)}/${num(st.desired_replicas)}`, badge(st.health, 'HEALTH_STATE_'),
          st.active_rollout_id ? h('span', {class: 'badge info'}, 'rolling out') : badge(st.last_rollout_phase, 'ROLLOUT_PHASE_'),
          st.endpoint || '—', ago(st.last_deploy_time),
        ]});
      }
    }
    replace(box, table(['application', 'environment', 'revision', 'ready', 'health', 'last rollout', 'endpoint', 'deployed'], rows, 'No applications yet.'));
  });
}

export function renderApp(ctx, name) {
  const base = `/v1/applications/${encodeURIComponent(name)}`;
  const head = h('div', {class: 'row'}, h('h1', null, name));
  const envBox = h('section', {class: 'card'}, h('p', {class: 'muted'}, 'Loading…'));
  const rolloutBox = h('section', {class: 'card', 'data-testid': 'rollout'}, h('h2', null, 'Rollout'), h('p', {class: 'muted'}, 'Loading…'));
  const historyBox = h('section', {class: 'card'}, h('h2', null, 'Rollouts'));
  const replicasBox = h('section', {class: 'card'}, h('h2', null, 'Replicas'));
  ctx.root.append(h('p', null, h('a', {href: '#/apps'}, '← Applications')), head, envBox, rolloutBox, h('div', {class: 'grid'}, historyBox, replicasBox));

  let envName = '';
  let watched = ''; // id of the rollout the stream follows
  let watch = null; // its AbortController

  const act = async (verb, body, done) => {
    try {
      const res = await api(`${base}:${verb}`, {method: 'POST', body: {environment: envName, ...body}, signal: ctx.signal});
      ctx.flash(done);
      if (res.rollout) drawRollout(res.rollout);
    } catch (err) {
      ctx.reportError(err);
    }
  };

  function drawRollout(r) {
    const steps = r.steps || [];
    const active = ACTIVE.has(r.phase);
    const canary = !!r.strategy?.canary;
    const doneSteps = steps.filter((st) => ['STEP_STATE_SUCCEEDED', 'STEP_STATE_SKIPPED'].includes(st.state)).length;
    const pct = canary ? num(r.canary_weight) : (steps.length ? Math.round((100 * doneSteps) / steps.length) : 0);
    const progressText = canary ? `${pct}% of traffic to r${num(r.to_revision)}` : `${doneSteps} of ${steps.length} steps done`;
    const off = !ctx.canOperate;
    const buttons = h('div', {class: 'row'},
      h('button', {type: 'button', 'data-testid': 'promote', disabled: off || !active, title: off ? READ_ONLY : 'End the current pause or step',
        onclick: () => act('promote', {rollout_id: r.id}, 'Promoted one step')}, 'Promote'),
      h('button', {type: 'button', class: 'secondary', 'data-testid': 'promote-full', disabled: off || !active, title: off ? READ_ONLY : 'Skip the remaining steps',
        onclick: () => act('promote', {rollout_id: r.id, full: true}, 'Promoted fully')}, 'Promote fully'),
      confirmButton('Abort', () => act('abort', {rollout_id: r.id, reason: 'aborted from the dashboard'}, 'Aborted'),
        {'data-testid': 'abort', disabled: off || !active, title: off ? READ_ONLY : 'Send all traffic back to the stable revision'}),
      off ? h('span', {class: 'muted small', 'data-testid': 'read-only'}, READ_ONLY) : null);
    replace(rolloutBox,
      h('h2', null, active ? 'Active rollout' : 'Latest rollout', badge(r.phase, 'ROLLOUT_PHASE_', {'data-testid': 'rollout-phase', 'data-phase': r.phase}),
        h('span', {class: 'badge'}, label(r.kind, 'ROLLOUT_KIND_'))),
      h('div', {class: 'row'},
        h('span', {class: 'mono'}, r.id), h('span', null, `r${num(r.from_revision)} → r${num(r.to_revision)}`),
        h('span', {class: 'muted'}, `started ${ago(r.start_time || r.create_time)}`, r.end_time ? `, took ${between(r.start_time || r.create_time, r.end_time)}` : '')),
      h('div', {class: 'row'},
        h('progress', {max: 100, value: pct, 'aria-label': 'rollout progress', class: 'progress'}),
        h('span', {'data-testid': 'rollout-progress', 'data-weight': num(r.canary_weight)}, progressText)),
      h('dl', {class: 'kv'},
        h('dt', null, 'Replicas'), h('dd', null, `${num(r.updated_replicas)} new, ${num(r.ready_replicas)} ready of ${num(r.desired_replicas)}; ${num(r.old_replicas)} old`),
        h('dt', null, 'Requests'), h('dd', null, `${num(r.total_requests)} total, ${num(r.failed_requests)} failed`),
        r.pause_cause ? [h('dt', null, 'Paused'), h('dd', null, label(r.pause_cause, 'PAUSE_CAUSE_'))] : null,
        r.rollback_trigger ? [h('dt', null, 'Rolled back by'), h('dd', null, label(r.rollback_trigger, 'ROLLBACK_TRIGGER_'))] : null,
        r.message ? [h('dt', null, 'Message'), h('dd', {'data-testid': 'rollout-message'}, r.message)] : null,
        r.reason ? [h('dt', null, 'Reason'), h('dd', null, r.reason)] : null),
      h('ol', {class: 'steps', 'data-testid': 'rollout-steps'}, steps.map((st) => h('li', {'data-state': st.state || ''},
        h('span', {class: 'idx'}, num(st.index) + 1), badge(st.state, 'STEP_STATE_'),
        h('span', null, st.description || label(st.kind, 'STEP_KIND_')),
        st.message ? h('span', {class: 'muted'}, st.message) : null))),
      buttons);
  }

  function follow(id) {
    if (watch) watch.abort();
    watched = id;
    watch = new AbortController();
    const signal = AbortSignal.any([ctx.signal, watch.signal]);
    const sub = {...ctx, signal};
    sub.follow(async () => {
      let last = null;
      await stream(`${base}/rollouts/${encodeURIComponent(id)}:watch`, (res) => {
        if (res.rollout) { last = res.rollout; drawRollout(res.rollout); }
      }, {signal});
      return last && !ACTIVE.has(last.phase) ? 'done' : 'again';
    });
  }

  ctx.every(2000, async () => {
    const {application: app} = await api(base, {signal: ctx.signal});
    const envs = app.environments?.length ? app.environments : [{name: 'default'}];
    if (!envName || !envs.some((e) => e.name === envName)) envName = envs[0].name;
    const env = envs.find((e) => e.name === envName);
    const st = env.status || {};
    const envSelect = envs.length > 1 ? h('select', {'aria-label': 'environment', onchange: (ev) => { envName = ev.target.value; watched = ''; }},
      envs.map((e) => h('option', {value: e.name, selected: e.name === envName}, e.name))) : null;
    const off = !ctx.canOperate;
    replace(head, h('h1', null, app.name), envSelect, h('span', {class: 'spacer'}),
      confirmButton('Roll back', () => act('rollback', {reason: 'rolled back from the dashboard'}, 'Rollback started'),
        {'data-testid': 'rollback', disabled: off, title: off ? READ_ONLY : 'Return to the last known-good revision'}));
    replace(envBox, h('h2', null, `Environment ${envName}`, badge(st.health, 'HEALTH_STATE_')),
      h('dl', {class: 'kv'},
        h('dt', null, 'Serving'), h('dd', {'data-testid': 'current-revision'}, st.current_revision ? `r${st.current_revision}` : '—'),
        h('dt', null, 'Last known good'), h('dd', null, st.last_known_good_revision ? `r${st.last_known_good_revision}` : '—'),
        h('dt', null, 'Replicas'), h('dd', null, `${num(st.ready_replicas)} ready of ${num(st.desired_replicas)}`),
        h('dt', null, 'Endpoint'), h('dd', {class: 'mono'}, st.endpoint || '—'),
        st.driver ? [h('dt', null, 'Driver'), h('dd', null, label(st.driver, 'DRIVER_KIND_'))] : null,
        h('dt', null, 'Latest revision'), h('dd', null, app.latest_revision ? `r${app.latest_revision}` : '—'),
        app.description ? [h('dt', null, 'Description'), h('dd', null, app.description)] : null));

    const res = await api(`${base}/rollouts${query({environment: envName, page_size: 20})}`, {signal: ctx.signal});
    const rollouts = res.rollouts || [];
    replace(historyBox, h('h2', null, 'Rollouts'), table(['id', 'kind', 'revisions', 'phase', 'started', 'took'], rollouts.map((r) => [
      h('span', {class: 'mono'}, r.id), label(r.kind, 'ROLLOUT_KIND_'), `r${num(r.from_revision)} → r${num(r.to_revision)}`,
      badge(r.phase, 'ROLLOUT_PHASE_'), time(r.start_time || r.create_time), r.end_time ? between(r.start_time || r.create_time, r.end_time) : '…',
    ]), 'No rollouts yet.'));

    if (st.active_rollout_id) {
      if (watched !== st.active_rollout_id) follow(st.active_rollout_id);
    } else {
      if (watch && watched) {
        // The watched rollout ended; the stream ends with it.
        watched = '';
      }
      if (rollouts[0]) drawRollout(rollouts[0]); else replace(rolloutBox, h('h2', null, 'Rollout'), h('p', {class: 'muted'}, 'No rollouts yet.'));
    }

    const reps = await api(`${base}/replicas${query({environment: envName})}`, {signal: ctx.signal});
    replace(replicasBox, h('h2', null, 'Replicas'), table(['name', 'revision', 'state', 'health', 'in rotation', 'address'], (reps.replicas || []).map((rp) => [
      rp.name || rp.id, `r${num(rp.revision)}`, badge(rp.state, 'REPLICA_STATE_'), badge(rp.health, 'HEALTH_STATE_'),
      rp.in_rotation ? 'yes' : (rp.draining ? 'draining' : '—'), rp.host_port ? `${rp.host_address || '127.0.0.1'}:${rp.host_port}` : '—',
    ]), 'No replicas.'));
  });
}
