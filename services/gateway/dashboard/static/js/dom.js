// DOM helpers. Every string from the server reaches the page as text
// (text nodes, textContent, attribute values), never as markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function applyProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
}

function appendChildren(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// h creates an HTML element: h('a', {href: '#/x', class: 'y'}, 'text', child).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

// s creates an SVG element.
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

// replace swaps an element's children for new ones.
export function replace(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
  return el;
}

// table builds a table from column titles and rows of cells; a row may be
// {cells, onclick, testid}.
export function table(columns, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p', {class: 'muted'}, empty);
  return h('table', null,
    h('thead', null, h('tr', null, columns.map((c) => h('th', {class: c.num ? 'num' : null}, c.title ?? c)))),
    h('tbody', null, rows.map((r) => {
      const row = Array.isArray(r) ? {cells: r} : r;
      return h('tr', {class: row.onclick ? 'clickable' : null, onclick: row.onclick, 'data-testid': row.testid},
        row.cells.map((cell, i) => h('td', {class: columns[i]?.num ? 'num' : columns[i]?.cls}, cell)));
    })));
}

// confirmButton makes a dangerous button need a second click within 4 s.
export function confirmButton(label, onConfirm, props = {}) {
  let armed = null;
  const btn = h('button', {type: 'button', class: 'danger', ...props}, label);
  btn.addEventListener('click', () => {
    if (armed) {
      clearTimeout(armed);
      armed = null;
      btn.textContent = label;
      btn.className = 'danger';
      onConfirm();
      return;
    }
    btn.textContent = `Confirm ${label.toLowerCase()}?`;
    btn.className = 'confirm';
    armed = setTimeout(() => { armed = null; btn.textContent = label; btn.className = 'danger'; }, 4000);
  });
  return btn;
}
