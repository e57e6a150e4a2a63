// The dashboard's shell: login, navigation by location hash, and the
// lifecycle of views (each view's streams and timers end when it is left).
import {api, atLeast, onUnauthorized, session, ApiError} from './api.js';
import {h, replace} from './dom.js';
import {renderOverview} from './views/overview.js';
import {renderApps, renderApp} from './views/apps.js';
import {renderPipelines, renderRun} from './views/pipelines.js';
import {renderAlerts} from './views/alerts.js';
import {renderLogs} from './views/logs.js';
import {label} from './format.js';

const $ = (id) => document.getElementById(id);

const routes = [
  {re: /^\/?$/, nav: 'overview', view: renderOverview},
  {re: /^\/apps$/, nav: 'apps', view: renderApps},
  {re: /^\/apps\/([^/]+)$/, nav: 'apps', view: renderApp},
  {re: /^\/pipelines$/, nav: 'pipelines', view: renderPipelines},
  {re: /^\/runs\/([^/]+)$/, nav: 'pipelines', view: renderRun},
  {re: /^\/alerts$/, nav: 'alerts', view: renderAlerts},
  {re: /^\/logs$/, nav: 'logs', view: renderLogs},
];

let current = null; // the live view's AbortController
let me = null; // {token_name, role}

// flash shows a short message in the corner.
export function flash(message, bad = false) {
  const el = h('div', {class: bad ? 'bad' : null}, message);
  $('flash').append(el);
  setTimeout(() => el.remove(), bad ? 8000 : 4000);
}

// context is what a view gets: its root element, an abort signal that fires
// when the view is left, the caller's role, and helpers bound to the signal.
function context(root, signal) {
  return {
    root,
    signal,
    role: me.role,
    canOperate: atLeast(me.role, 'ROLE_OPERATOR'),
    flash,
    // every runs fn now and every ms until the view is left; errors are
    // shown and retried on the next tick.
    every(ms, fn) {
      let timer = null;
      const tick = async () => {
        try { await fn(); } catch (err) { if (!signal.aborted) reportError(err); }
        if (!signal.aborted) timer = setTimeout(tick, ms);
      };
      signal.addEventListener('abort', () => clearTimeout(timer));
      tick();
    },
    // follow keeps a stream open, reopening it after a break, until the
    // view is left or open returns 'done'.
    async follow(open) {
      let delay = 500;
      while (!signal.aborted) {
        try {
          if ((await open()) === 'done') return;
          delay = 500;
        } catch (err) {
          if (signal.aborted) return;
          if (err instanceof ApiError && [400, 401, 403, 404].includes(err.status)) { reportError(err); return; }
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    },
    reportError,
  };
}

function reportError(err) {
  if (err?.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401) return; // handled by logout
  flash(err instanceof ApiError ? `${err.status}: ${err.message}` : String(err?.message || err), true);
}

function route() {
  if (!me) return;
  if (current) current.abort();
  current = new AbortController();
  const path = decodeURIComponent(location.hash.replace(/^#/, '')) || '/';
  const match = routes.map((r) => ({r, m: r.re.exec(path)})).find((x) => x.m);
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', match?.r.nav === a.dataset.route);
  const root = replace($('view'));
  if (!match) {
    root.append(h('div', {class: 'card'}, h('h1', null, 'Not found'), h('p', null, 'No page at ', h('code', null, path), '.')));
    return;
  }
  const ctx = context(root, current.signal);
  Promise.resolve(match.r.view(ctx, ...match.m.slice(1))).catch(reportError);
}

function showLogin(message = '') {
  me = null;
  if (current) current.abort();
  current = null;
  replace($('view')); // nothing the last token could read stays in the page
  $('who').textContent = '';
  replace($('flash'));
  $('view').hidden = true;
  $('nav').hidden = true;
  $('session').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('token').focus();
}

async function start() {
  try {
    me = await api('/v1/whoami');
  } catch (err) {
    session.clear();
    showLogin(err instanceof ApiError && err.status === 401 ? 'That token was not accepted.' : `Cannot reach the gateway: ${err.message}`);
    return;
  }
  $('login').hidden = true;
  $('view').hidden = false;
  $('nav').hidden = false;
  $('session').hidden = false;
  $('who').textContent = `${me.token_name || 'token'} · ${label(me.role, 'ROLE_')}`;
  document.body.dataset.role = me.role || '';
  route();
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = $('token').value.trim();
  if (!t) return;
  session.save(t);
  $('token').value = '';
  start();
});
$('logout').addEventListener('click', () => {
  session.clear();
  document.body.dataset.role = '';
  showLogin('Logged out.');
});
onUnauthorized(() => {
  session.clear();
  showLogin('Your token is no longer accepted; log in again.');
});
window.addEventListener('hashchange', route);

if (session.token()) start(); else showLogin();
