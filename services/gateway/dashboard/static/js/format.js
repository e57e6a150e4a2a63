// Formatting of API values for people.

// label turns an enum value into words: ROLLOUT_PHASE_ROLLED_BACK → "Rolled back".
export function label(enumValue, prefix) {
  if (!enumValue) return '—';
  let v = String(enumValue);
  if (prefix && v.startsWith(prefix)) v = v.slice(prefix.length);
  v = v.replace(/_/g, ' ').toLowerCase();
  return v.charAt(0).toUpperCase() + v.slice(1);
}

// tone is the badge colour of a state.
export function tone(enumValue) {
  const v = String(enumValue || '');
  if (/(SUCCEEDED|SUCCESS|HEALTHY$|PASSING|RUNNING_OK|_PASS$|RESOLVED)/.test(v) && !/UNHEALTHY/.test(v)) return 'ok';
  if (/(FAILED|UNHEALTHY|CRITICAL|ROLLED_BACK|ROLLING_BACK|ABORTED|FIRING|_FAIL$|ERROR|FATAL|CANCELLED)/.test(v)) return 'bad';
  if (/(DEGRADED|WARNING|PAUSED|PENDING|QUEUED|WARN|INCONCLUSIVE|SKIPPED)/.test(v)) return 'warn';
  if (/(PROGRESSING|PROMOTING|VERIFYING|RUNNING|STARTING)/.test(v)) return 'info';
  return '';
}

export function num(v) { return Number(v || 0); }

export function time(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toLocaleString(undefined, {hour12: false});
}

export function clock(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleTimeString(undefined, {hour12: false});
}

export function ago(ts) {
  if (!ts) return '—';
  const secs = Math.round((Date.now() - new Date(ts).getTime()) / 1000);
  if (!Number.isFinite(secs)) return String(ts);
  if (secs < 60) return `${Math.max(secs, 0)}s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)}m ago`;
  if (secs < 86400) return `${Math.round(secs / 3600)}h ago`;
  return `${Math.round(secs / 86400)}d ago`;
}

// duration renders a protobuf Duration ("1.500s") or a millisecond count.
export function duration(d) {
  let secs = typeof d === 'string' ? parseFloat(d) : Number(d) / 1000;
  if (!Number.isFinite(secs)) return '—';
  if (secs < 1) return `${Math.round(secs * 1000)}ms`;
  if (secs < 60) return `${secs.toFixed(1)}s`;
  const m = Math.floor(secs / 60);
  return `${m}m${Math.round(secs - m * 60)}s`;
}

export function between(start, end) {
  if (!start) return '—';
  const ms = (end ? new Date(end) : new Date()).getTime() - new Date(start).getTime();
  return duration(ms);
}

// metricValue renders a double; proto3 JSON leaves out zeros.
export function metricValue(v) {
  const n = Number(v ?? 0);
  if (!Number.isFinite(n)) return String(v);
  if (n !== 0 && (Math.abs(n) >= 1e6 || Math.abs(n) < 1e-3)) return n.toExponential(2);
  return String(Math.round(n * 1000) / 1000);
}

export function labels(obj, skip = []) {
  return Object.entries(obj || {}).filter(([k]) => !skip.includes(k)).map(([k, v]) => `${k}=${v}`).join(', ');
}
