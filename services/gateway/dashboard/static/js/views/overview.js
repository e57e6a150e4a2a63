// Overview: overall health in its three states, the key metrics chart, and
// what needs attention (firing alerts, applications and their rollouts).
import {api, query} from '../api.js';
import {h, replace, table} from '../dom.js';
import {label, tone, num, ago, metricValue, labels} from '../format.js';
import {lineChart} from '../chart.js';

// Preferred metrics for the chart, in order; the first that exists is shown.
const KEY_METRICS = [
  'opsuite_router_requests_total',
  'opsuite_router_request_errors_total',
  'opsuite_grpc_server_handled_total',
  'opsuite_logaggregator_ingested_records_total',
  'opsuite_healthchecker_checks_total',
];

// The chart's window: 15 minutes in 120 steps.
const WINDOW_SECONDS = 900;

const HEALTH_TEXT = {
  OVERALL_HEALTH_HEALTHY: ['Healthy', 'ok'],
  OVERALL_HEALTH_DEGRADED: ['Degraded', 'warn'],
  OVERALL_HEALTH_UNHEALTHY: ['Unhealthy', 'bad'],
};

export function renderOverview(ctx) {
  const healthCard = h('section', {class: 'card', 'data-testid': 'health-card'}, h('h2', null, 'Health'), h('p', {class: 'muted'}, 'Loading…'));
  const alertsCard = h('section', {class: 'card'}, h('h2', null, 'Firing alerts'), h('p', {class: 'muted'}, 'Loading…'));
  const appsCard = h('section', {class: 'card'}, h('h2', null, 'Applications'), h('p', {class: 'muted'}, 'Loading…'));
  const metricsCard = h('section', {class: 'card', 'data-testid': 'metrics-card'});
  ctx.root.append(h('h1', null, 'Overview'), h('div', {class: 'grid'}, healthCard, metricsCard), h('div', {class: 'grid'}, alertsCard, appsCard));

  ctx.every(3000, async () => {
    const health = await api('/v1/health', {signal: ctx.signal});
    const [text, cls] = HEALTH_TEXT[health.health] || ['Unknown', 'idle'];
    // Targets that are not passing first, then by group and name.
    const rank = {CHECK_STATE_CRITICAL: 0, CHECK_STATE_WARNING: 1, CHECK_STATE_PENDING: 2};
    const targets = [...(health.targets || [])].sort((a, b) =>
      (rank[a.status?.state] ?? 3) - (rank[b.status?.state] ?? 3) || `${a.group}/${a.name}`.localeCompare(`${b.group}/${b.name}`));
    replace(healthCard,
      h('h2', null, 'Health'),
      h('div', {class: 'health'},
        h('div', {class: ['state', cls], 'data-testid': 'health-state', 'data-state': health.health || ''}, text),
        h('div', {class: 'counts'},
          h('div', null, h('b', null, num(health.total)), 'targets'),
          h('div', null, h('b', null, num(health.passing)), 'passing'),
          h('div', null, h('b', null, num(health.warning)), 'warning'),
          h('div', null, h('b', null, num(health.critical)), 'critical'),
          h('div', null, h('b', null, num(health.pending)), 'pending'))),
      h('h3', null, 'Targets'),
      table(['target', 'group', 'state', 'last result'], targets.slice(0, 12).map((t) => ({testid: `target-${t.name}`, cells: [
        t.non_critical ? [t.name, h('span', {class: 'muted small'}, ' (non-critical)')] : t.name, t.group || '—',
        h('span', {class: ['badge', tone(t.status?.state)]}, label(t.status?.state, 'CHECK_STATE_')),
        t.status?.last_result?.message || '—',
      ]})), 'No health checks yet.'),
      targets.length > 12 ? h('p', {class: 'muted small'}, `and ${targets.length - 12} more`) : null);
  });

  ctx.every(5000, async () => {
    const res = await api(`/v1/alerts${query({states: 'ALERT_STATE_FIRING', page_size: 10})}`, {signal: ctx.signal});
    const alerts = res.alerts || [];
    replace(alertsCard, h('h2', null, 'Firing alerts ', h('span', {class: ['badge', alerts.length ? 'bad' : 'ok']}, alerts.length)),
      table(['alert', 'labels', 'value', 'since'], alerts.map((a) => [
        a.labels?.alertname || a.rule || a.id, labels(a.labels, ['alertname']), metricValue(a.value), ago(a.fired_at || a.active_at),
      ]), 'No alert is firing.'),
      h('p', null, h('a', {href: '#/alerts'}, 'All alerts →')));
  });

  ctx.every(4000, async () => {
    const res = await api('/v1/applications', {signal: ctx.signal});
    const rows = [];
    for (const app of res.applications || []) {
      for (const env of app.environments || [{name: 'default'}]) {
        const st = env.status || {};
        rows.push({onclick: () => { location.hash = `#/apps/${encodeURIComponent(app.name)}`; }, cells: [
          app.name, env.name, st.current_revision ? `r${st.current_revision}` : '—',
          `${num(st.ready_replicas)}/${num(st.desired_replicas)}`,
          h('span', {class: ['badge', tone(st.health)]}, label(st.health, 'HEALTH_STATE_')),
          st.active_rollout_id ? h('span', {class: 'badge info'}, 'rolling out') : h('span', {class: ['badge', tone(st.last_rollout_phase)]}, label(st.last_rollout_phase, 'ROLLOUT_PHASE_')),
        ]});
      }
    }
    replace(appsCard, h('h2', null, 'Applications'), table(['application', 'env', 'revision', 'ready', 'health', 'rollout'], rows, 'No applications yet.'));
  });

  renderMetrics(ctx, metricsCard);
}

async function renderMetrics(ctx, card) {
  const select = h('select', {'aria-label': 'metric', 'data-testid': 'metric-select'});
  const chartBox = h('div', null, h('p', {class: 'muted'}, 'Loading…'));
  const summaryBox = h('div', {class: 'small'});
  replace(card, h('div', {class: 'row'}, h('h2', null, 'Key metrics'), h('span', {class: 'spacer'}), select), chartBox, summaryBox);
  let metrics = [];
  let chosen = '';
  select.addEventListener('change', () => { chosen = select.value; draw(); });

  async function loadList() {
    const res = await api('/v1/metrics?page_size=1000', {signal: ctx.signal});
    metrics = (res.metrics || []).filter((m) => !/_(bucket|sum|count)$/.test(m.name) || m.type !== 'METRIC_TYPE_HISTOGRAM');
    const names = metrics.map((m) => m.name);
    if (!chosen || !names.includes(chosen)) chosen = KEY_METRICS.find((n) => names.includes(n)) || names[0] || '';
    replace(select, metrics.map((m) => h('option', {value: m.name, selected: m.name === chosen}, m.name)));
  }

  async function draw() {
    if (!chosen) {
      replace(chartBox, h('p', {class: 'muted', 'data-testid': 'chart-empty'}, 'The monitor has no metrics yet: add a scrape target or push samples.'));
      replace(summaryBox);
      return;
    }
    const info = metrics.find((m) => m.name === chosen) || {};
    const counter = info.type === 'METRIC_TYPE_COUNTER' || /_total$/.test(chosen);
    const expr = counter ? `sum(rate(${chosen}[1m]))` : `sum(${chosen})`;
    const end = new Date();
    const start = new Date(end.getTime() - WINDOW_SECONDS * 1000);
    const [range, summary] = await Promise.all([
      api(`/v1/metrics:queryRange${query({query: expr, start_time: start.toISOString(), end_time: end.toISOString(), step: `${WINDOW_SECONDS / 120}s`})}`, {signal: ctx.signal}),
      api(`/v1/metrics/${encodeURIComponent(chosen)}:summary${query({window: `${WINDOW_SECONDS}s`, page_size: 5})}`, {signal: ctx.signal}),
    ]);
    replace(chartBox, h('p', {class: 'muted small'}, h('code', null, expr), ' over the last 15 minutes'),
      lineChart(range.result?.series || [], {title: expr, start, end}));
    replace(summaryBox, table([
      'series', {title: 'current', num: true}, {title: 'avg', num: true}, {title: 'min', num: true}, {title: 'max', num: true},
    ], (summary.series || []).map((sr) => [labels(sr.labels, ['__name__']) || chosen, metricValue(sr.current), metricValue(sr.avg), metricValue(sr.min), metricValue(sr.max)]),
    'No samples in the window.'));
  }

  ctx.every(10000, async () => { await loadList(); await draw(); });
}
