// A small line chart drawn as inline SVG elements (no markup strings).
import {s, h} from './dom.js';
import {clock, metricValue, labels} from './format.js';

const W = 640, H = 220, L = 56, R = 12, T = 10, B = 24;

// lineChart draws up to five series of {labels, points: [{time, value}]}
// over the window [start, end] (Date), or over the points' own span.
export function lineChart(series, {title = '', start, end} = {}) {
  const shown = series.slice(0, 5).map((ser) => ({
    labels: ser.labels || {},
    points: (ser.points || []).map((p) => ({t: new Date(p.time).getTime(), v: Number(p.value ?? 0)}))
      .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v)),
  })).filter((ser) => ser.points.length);
  if (!shown.length) return h('p', {class: 'muted', 'data-testid': 'chart-empty'}, 'No samples in this window yet.');
  const all = shown.flatMap((ser) => ser.points);
  let t0 = start ? start.getTime() : Math.min(...all.map((p) => p.t));
  let t1 = end ? end.getTime() : Math.max(...all.map((p) => p.t));
  let v0 = Math.min(0, ...all.map((p) => p.v)), v1 = Math.max(...all.map((p) => p.v));
  if (t1 === t0) t1 = t0 + 1;
  if (v1 === v0) v1 = v0 + 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - v0) / (v1 - v0)) * (H - T - B);
  const svg = s('svg', {class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, 'data-testid': 'chart'});
  for (let i = 0; i <= 4; i++) {
    const v = v0 + ((v1 - v0) * i) / 4;
    svg.append(s('line', {class: 'gridline', x1: L, x2: W - R, y1: y(v), y2: y(v)}),
      s('text', {x: L - 6, y: y(v) + 4, 'text-anchor': 'end'}, metricValue(v)));
  }
  svg.append(s('line', {class: 'axis', x1: L, x2: L, y1: T, y2: H - B}),
    s('line', {class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B}),
    s('text', {x: L, y: H - 6}, clock(t0)),
    s('text', {x: W - R, y: H - 6, 'text-anchor': 'end'}, clock(t1)));
  shown.forEach((ser, i) => {
    const pts = ser.points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', {class: `series s${i}`, points: pts}, s('title', null, labels(ser.labels) || title)));
    if (ser.points.length <= 40) {
      for (const p of ser.points) svg.append(s('circle', {class: `dot s${i}`, cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5}));
    }
  });
  const legend = h('div', {class: 'legend'}, shown.map((ser, i) => h('span', {class: `s${i}`}, labels(ser.labels) || title)));
  return h('div', null, svg, legend);
}
