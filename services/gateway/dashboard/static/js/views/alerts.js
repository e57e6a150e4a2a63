// Alerts from the monitor, with acknowledgement for operators.
import {api, query} from '../api.js';
import {h, replace, table} from '../dom.js';
import {label, tone, ago, metricValue, labels} from '../format.js';

const FILTERS = [
  ['Firing and pending', ['ALERT_STATE_FIRING', 'ALERT_STATE_PENDING']],
  ['Firing', ['ALERT_STATE_FIRING']],
  ['Resolved', ['ALERT_STATE_RESOLVED']],
  ['All', []],
];

export function renderAlerts(ctx) {
  let filter = 0;
  const select = h('select', {'aria-label': 'alert states', onchange: (ev) => { filter = Number(ev.target.value); refresh(); }},
    FILTERS.map(([name], i) => h('option', {value: i}, name)));
  const box = h('section', {class: 'card', 'data-testid': 'alerts'}, h('p', {class: 'muted'}, 'Loading…'));
  ctx.root.append(h('div', {class: 'row'}, h('h1', null, 'Alerts'), h('span', {class: 'spacer'}), select), box);

  const ack = async (id) => {
    try {
      await api(`/v1/alerts/${encodeURIComponent(id)}:acknowledge`, {method: 'POST', body: {comment: 'acknowledged from the dashboard'}, signal: ctx.signal});
      ctx.flash('Acknowledged');
      refresh();
    } catch (err) { ctx.reportError(err); }
  };

  async function refresh() {
    const res = await api(`/v1/alerts${query({states: FILTERS[filter][1], page_size: 200, include_silenced: true})}`, {signal: ctx.signal});
    replace(box, table(['state', 'alert', 'application', 'labels', 'value', 'since', 'summary', ''], (res.alerts || []).map((a) => ({testid: 'alert-row', cells: [
      h('span', {class: ['badge', tone(a.state)]}, label(a.state, 'ALERT_STATE_')),
      a.labels?.alertname || a.rule || a.id,
      a.deploy?.application || a.labels?.app || '—',
      labels(a.labels, ['alertname']),
      metricValue(a.value),
      ago(a.fired_at || a.active_at),
      a.annotations?.summary || a.annotations?.description || '',
      a.acknowledgement ? h('span', {class: 'muted', 'data-testid': 'acked'}, `acked by ${a.acknowledgement.by || 'someone'}`)
        : h('button', {type: 'button', class: 'secondary', 'data-testid': 'ack', disabled: !ctx.canOperate || a.state === 'ALERT_STATE_RESOLVED',
          title: ctx.canOperate ? 'Acknowledge' : 'Needs the operator role; this token is read-only.', onclick: () => ack(a.id)}, 'Acknowledge'),
    ]})), 'No alerts match.'));
  }
  ctx.every(5000, refresh);
}
