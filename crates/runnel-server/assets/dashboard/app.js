// runnel dashboard: a live view of one pipeline, fed by Server-Sent Events.
// No framework and no build step: this file is embedded in the server binary.
'use strict';

const TOKEN_KEY = 'runnel-token';
const RENDER_INTERVAL_MS = 250; // at most ~4 renders per second, however fast events arrive
const MAX_POINTS = 200; // per timeseries series
const DEFAULT_MAX_ROWS = 100;
const DISCOVERY_RETRY_MS = 2000;
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed',
  '#0891b2', '#db2777', '#65a30d', '#475569', '#ea580c'];
const KNOWN_KINDS = ['window', 'window-aggregate', 'window-join', 'source', 'project', 'window_assign', 'window_aggregate',
  'session', 'window_join', 'sink', 'quality'];

const $ = (id) => document.getElementById(id);
const collator = new Intl.Collator(undefined, { numeric: true });
const intFmt = new Intl.NumberFormat('en');
const decFmt = new Intl.NumberFormat('en', { maximumFractionDigits: 3 });
const rateFmt = new Intl.NumberFormat('en', { maximumFractionDigits: 1 });
const tickFmt = new Intl.NumberFormat('en', { maximumSignificantDigits: 4, notation: 'compact' });

// ---------------------------------------------------------------- DOM helpers

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  // Strings become text nodes, so data never reaches innerHTML.
  for (const c of children.flat()) if (c != null) node.append(c);
  return node;
}
const el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
const svg = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

// ---------------------------------------------------------------- formatting

function fmtCount(v) { return Number.isFinite(v) ? intFmt.format(v) : '—'; }
function fmtRate(v) { return Number.isFinite(v) ? rateFmt.format(v) : '—'; }

function fmtDuration(ms) {
  if (!Number.isFinite(ms)) return '—';
  const neg = ms < 0 ? '-' : '';
  ms = Math.abs(ms);
  if (ms < 1000) return `${neg}${Math.round(ms)} ms`;
  if (ms < 60000) return `${neg}${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 3600) return `${neg}${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${neg}${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m ${pad(s % 60)}s`;
  return `${neg}${Math.floor(s / 86400)}d ${pad(Math.floor(s / 3600) % 24)}h`;
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// Timestamps arrive as epoch ms or ISO strings.
function toMs(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    if (!Number.isNaN(t)) return t;
    const n = Number(v);
    return v.trim() !== '' && Number.isFinite(n) ? n : NaN;
  }
  return NaN;
}

function fmtIso(v) {
  const t = toMs(v);
  return Number.isFinite(t) ? new Date(t).toISOString() : '—';
}

function fmtClock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function fmtScore(v) {
  const s = Number(v);
  if (v == null || !Number.isFinite(s)) return '';
  // Scores are normally probabilities; anything above 1 is taken to be a percentage already.
  return `${(s <= 1 ? s * 100 : s).toFixed(1)}%`;
}

// A score's class: its colour follows the value (a 17 % score is not green).
function scoreClass(v) {
  const s = Number(v);
  if (v == null || !Number.isFinite(s)) return '';
  const p = s <= 1 ? s : s / 100;
  return p >= 0.7 ? 'score-high' : p >= 0.4 ? 'score-mid' : 'score-low';
}

// Times in tables: the clock time for today, the date too otherwise (ISO in the title).
function fmtTime(v) {
  const t = toMs(v);
  if (!Number.isFinite(t)) return '—';
  const d = new Date(t);
  const clock = d.toISOString().slice(11, 19);
  const ms = t % 1000 ? `.${String(t % 1000).padStart(3, '0')}` : '';
  return d.toDateString() === new Date().toDateString() ? `${clock}${ms}` : `${d.toISOString().slice(5, 10)} ${clock}`;
}

function fmtCell(v, type) {
  if (v == null) return '—';
  if (/TIMESTAMP|DATE/i.test(type || '') && (typeof v === 'number' || typeof v === 'string')) return fmtTime(v);
  if (typeof v === 'number') {
    return Number.isInteger(v) ? intFmt.format(v) : decFmt.format(v);
  }
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// ---------------------------------------------------------------- auth

function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}
function setToken(t) {
  try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* storage disabled: token lives only in this tab */ }
}

// EventSource and <img> cannot send headers, so the token travels as a query parameter.
function withToken(url) {
  const u = new URL(url, location.href);
  const t = getToken();
  if (t) u.searchParams.set('access_token', t);
  return u.origin === location.origin ? u.pathname + u.search + u.hash : u.href;
}

// Every 401 in flight waits on the same form, so the user is asked once.
let tokenWanted = null;
function askForToken(rejected) {
  if (tokenWanted) return tokenWanted;
  tokenWanted = new Promise((resolve) => {
    const form = $('auth');
    const input = $('token-input');
    $('auth-msg').textContent = rejected ? 'That token was rejected; try again.' : 'This server requires an access token.';
    form.hidden = false;
    input.value = '';
    input.focus();
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      setToken(t);
      input.value = '';
      form.hidden = true;
      form.onsubmit = null;
      tokenWanted = null;
      resolve();
    };
  });
  return tokenWanted;
}

async function apiFetch(path, init = {}) {
  for (;;) {
    const t = getToken();
    const res = await fetch(path, {
      ...init,
      headers: { ...(init.headers || {}), ...(t ? { Authorization: `Bearer ${t}` } : {}) },
      cache: 'no-store',
    });
    if (res.status !== 401) return res;
    await askForToken(Boolean(t));
  }
}

// ---------------------------------------------------------------- connection indicator

const troubled = new Set();
let everConnected = false;

function setHealthy(source, ok) {
  if (ok) { troubled.delete(source); everConnected = true; } else troubled.add(source);
  paintConn();
}

function paintConn() {
  const c = $('conn');
  const state = troubled.size ? 'reconnecting' : everConnected ? 'connected' : 'connecting';
  if (c.dataset.state === state) return;
  c.dataset.state = state;
  c.textContent = state === 'connected' ? 'connected' : `${state}…`;
}

// An EventSource that also survives what the browser gives up on: it retries network
// drops by itself, but closes for good on an HTTP error (401 after a token change, 404
// while a pipeline restarts). `recheck` decides whether to try again.
function openStream(path, handlers, recheck = checkAuth) {
  const me = {};
  let es = null;
  let stopped = false;
  let timer = 0;
  let backoff = 1000;

  const connect = () => {
    es = new EventSource(withToken(path));
    const alive = () => { backoff = 1000; setHealthy(me, true); };
    es.onopen = alive;
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        alive();
        let data;
        try { data = JSON.parse(ev.data); } catch {
          console.warn(`runnel: unparsable "${name}" event on ${path}`);
          return;
        }
        fn(data);
      });
    }
    es.onerror = () => {
      if (stopped) return;
      setHealthy(me, false);
      if (es.readyState !== EventSource.CLOSED) return;
      es.close();
      timer = setTimeout(async () => {
        let again = true;
        try { again = await recheck(); } catch { /* server unreachable: keep trying */ }
        if (again && !stopped) connect();
      }, backoff);
      backoff = Math.min(backoff * 2, 15000);
    };
  };

  connect();
  me.close = () => {
    stopped = true;
    clearTimeout(timer);
    if (es) es.close();
    troubled.delete(me);
    paintConn();
  };
  return me;
}

// Going through apiFetch brings up the token form if the token is missing or stale.
async function checkAuth() {
  await apiFetch('/api/pipelines');
  return true;
}

// ---------------------------------------------------------------- render scheduling

// Events only mark things dirty; one timer + animation frame renders them together.
const dirty = new Set();
let flushPending = false;
let lastFlush = 0;

function schedule(item) {
  dirty.add(item);
  if (flushPending) return;
  flushPending = true;
  const wait = Math.max(0, lastFlush + RENDER_INTERVAL_MS - performance.now());
  setTimeout(() => requestAnimationFrame(flush), wait);
}

function flush() {
  flushPending = false;
  lastFlush = performance.now();
  const items = [...dirty];
  dirty.clear();
  for (const item of items) {
    try { item.render(); } catch (err) { console.error('runnel: render failed', err); }
  }
  markReady();
}

// `data-ready` on <body> once the pipeline's graph and the first rows are drawn, so a
// headless screenshot or a test can wait for it (the event streams never go idle).
function markReady() {
  if (document.body.dataset.ready === 'true' || !view.graphSig) return;
  const panels = [...view.panels.values()];
  if (panels.some((p) => !p.updated)) return;
  if (panels.length && !panels.some((p) => p.rowsSeen > 0)) return;
  document.body.dataset.ready = 'true';
}

// ---------------------------------------------------------------- pipeline view

const view = {
  name: null,
  status: null,
  statusAt: 0,
  stream: null,
  rowsStream: null,
  panels: new Map(),
  panelSig: '',
  graphSig: '',
  blocked: new Map(), // node id -> { ms, at } from the previous status
  backpressure: new Map(), // node id -> percent of the last interval spent blocked
  render: renderStatus,
};

function showNotice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = !text;
}

async function discover() {
  let list;
  let hosting = false;
  try {
    const res = await apiFetch('/api/pipelines');
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    list = body.pipelines || [];
    hosting = Boolean(body.hosting);
  } catch (err) {
    showNotice(`cannot reach the server (${err.message}); retrying…`);
    setTimeout(discover, DISCOVERY_RETRY_MS);
    return;
  }
  renderHosted(list, hosting);
  const wanted = new URLSearchParams(location.search).get('pipeline');
  const found = wanted ? list.find((p) => p.name === wanted) : list[0];
  if (!found) {
    showNotice(wanted ? `pipeline "${wanted}" is not running` : 'no pipeline running');
    setTimeout(discover, DISCOVERY_RETRY_MS);
    return;
  }
  showNotice('');
  watch(found.name);
}

function watch(name) {
  view.name = name;
  $('pipeline-name').textContent = name;
  document.title = `${name} · runnel`;
  const path = `/api/pipelines/${encodeURIComponent(name)}`;
  view.stream = openStream(`${path}/events`, { status: onStatus, message: onStatus }, async () => {
    const res = await apiFetch(path);
    if (res.status !== 404) return true;
    // The pipeline went away: drop everything and look for one again.
    forget();
    discover();
    return false;
  });
}

function forget() {
  delete document.body.dataset.ready;
  if (view.stream) view.stream.close();
  if (view.rowsStream) view.rowsStream.close();
  view.rowsStream = null;
  view.panels.clear();
  $('panels').replaceChildren();
  Object.assign(view, { stream: null, status: null, panelSig: '', graphSig: '' });
  view.blocked.clear();
  view.backpressure.clear();
  $('graph').replaceChildren(el('p', { class: 'empty', text: 'waiting for the pipeline…' }));
  $('operators').tBodies[0].replaceChildren();
  $('checkpoint').textContent = 'no checkpoints';
  $('state').hidden = true;
  $('health').hidden = true;
  tickUptime();
}

function onStatus(st) {
  const now = performance.now();
  // blocked_ms is cumulative (summed over the node's parallel instances), so backpressure
  // is the growth since the previous sample relative to the elapsed instance-time.
  for (const n of st.nodes || []) {
    const prev = view.blocked.get(n.id);
    if (prev && Number.isFinite(n.blocked_ms) && now > prev.at) {
      const pct = ((n.blocked_ms - prev.ms) / ((now - prev.at) * Math.max(1, n.parallelism || 1))) * 100;
      view.backpressure.set(n.id, Math.min(100, Math.max(0, pct)));
    }
    if (Number.isFinite(n.blocked_ms)) view.blocked.set(n.id, { ms: n.blocked_ms, at: now });
  }
  view.status = st;
  view.statusAt = now;

  const defs = st.panels || [];
  const sig = defs.map((p) => `${p.name}\u0000${p.view}`).sort().join('\u0001');
  if (sig !== view.panelSig) {
    view.panelSig = sig;
    rebuildPanels(defs);
  } else {
    for (const d of defs) { const p = view.panels.get(d.name); if (p) p.def = d; }
  }
  schedule(view);
}

function renderStatus() {
  const st = view.status;
  if (!st) return;
  renderHeader(st);
  const sig = JSON.stringify([
    (st.nodes || []).map((n) => [n.id, n.kind, n.label, n.parallelism]),
    (st.edges || []).map((e) => [e.from, e.to, e.partitioning]),
  ]);
  if (sig !== view.graphSig) {
    view.graphSig = sig;
    $('graph').replaceChildren(drawGraph(st.nodes || [], st.edges || []));
  }
  for (const g of document.querySelectorAll('#graph .graph-node')) {
    g.classList.toggle('congested', (view.backpressure.get(Number(g.dataset.nodeId)) || 0) >= 50);
  }
  renderOperators(st.nodes || []);
  renderCheckpoint(st.checkpoint);
  renderDistributed(st.distributed);
  renderQuality(st.quality);
  renderProblems(st);
}

// What went wrong: the pipeline's error, each connector's current problem, and the
// latest dead letters with their reasons (newest first).
function renderProblems(st) {
  const problems = [];
  if (st.error) problems.push(`pipeline ${st.state}: ${st.error}`);
  for (const n of st.nodes || []) if (n.problem) problems.push(`${n.label}: ${n.problem}`);
  const letters = st.dead_letters || [];
  $('problems').hidden = !problems.length && !letters.length;
  $('problem-list').replaceChildren(...problems.map((p) => el('li', { class: 'bad', text: p })));
  $('dead-letters').tBodies[0].replaceChildren(...letters.map((d) => el('tr', null,
    el('td', { class: 'mono', title: d.time || '', text: d.time ? fmtTime(d.time) : '—' }),
    el('td', { text: d.table || '' }),
    el('td', { class: 'mono', text: d.location || '' }),
    el('td', { class: 'bad', text: d.reason || '' }),
    el('td', { class: 'mono raw', title: d.raw || '', text: d.raw != null ? d.raw : (d.raw_base64 ? `(binary, base64) ${d.raw_base64.slice(0, 40)}…` : '') }),
    el('td', { class: 'muted', text: d.target || '' }))));
}

// Data quality per table: rules and their violations, dead letters, late rows, and
// (SET 'quality.profile' = 'on') each source's column profile.
function fmtStat(v) {
  if (!Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return Number.isInteger(v) ? intFmt.format(v) : v.toFixed(a >= 100 ? 1 : 3);
}

function renderQuality(q) {
  const card = $('quality');
  const tables = (q && q.tables) || [];
  card.hidden = tables.length === 0;
  if (!tables.length) return;
  const blocks = tables.map((t) => {
    const facts = [`${t.role} ${t.table}`];
    if (Number.isFinite(t.rows)) facts.push(`${fmtCount(t.rows)} rows`);
    facts.push(`${fmtCount(t.violations)} rule violations`);
    if (Number.isFinite(t.dead_letters)) facts.push(`${fmtCount(t.dead_letters)} dead letters`);
    if (Number.isFinite(t.late_rows)) facts.push(`${fmtCount(t.late_rows)} late rows`);
    const parts = [el('p', { class: 'quality-summary', text: facts.join(' · ') })];
    if ((t.rules || []).length) {
      parts.push(el('div', { class: 'table-wrap' }, el('table', { class: 'data quality-rules' },
        el('thead', null, el('tr', null,
          el('th', { text: 'Rule' }), el('th', { text: 'Condition' }), el('th', { text: 'Action' }),
          el('th', { class: 'num', text: 'Violations' }))),
        el('tbody', null, ...t.rules.map((r) => el('tr', null,
          el('td', { text: r.rule }),
          el('td', { class: 'mono', text: r.text }),
          el('td', { text: r.action }),
          el('td', { class: `num${r.violations > 0 ? ' bad' : ''}`, text: fmtCount(r.violations) })))))));
    }
    const cols = (t.profile && t.profile.columns) || [];
    if (cols.length) {
      const head = ['Column', 'Type', 'NULLs', 'Distinct', 'Min', 'Max', 'Mean', 'Stddev', 'p50', 'p99'];
      parts.push(el('div', { class: 'table-wrap' }, el('table', { class: 'data quality-profile' },
        el('thead', null, el('tr', null, ...head.map((h, i) => el('th', { class: i > 1 ? 'num' : '', text: h })))),
        el('tbody', null, ...cols.map((c) => el('tr', null,
          el('td', { text: c.name }),
          el('td', { class: 'mono', text: c.type }),
          el('td', { class: `num${c.nulls > 0 ? ' warn' : ''}`, text: `${fmtCount(c.nulls)} (${(100 * (c.null_fraction || 0)).toFixed(1)}%)` }),
          el('td', { class: 'num', text: `≈${fmtCount(c.distinct)}` }),
          ...['min', 'max', 'mean', 'stddev', 'p50', 'p99'].map((k) => el('td', { class: 'num', text: fmtStat(c[k]) }))))))));
    }
    return el('div', { class: 'quality-table', 'data-table': t.table }, ...parts);
  });
  $('quality-tables').replaceChildren(...blocks);
}

// A distributed pipeline's member: the group's members and this member's tasks.
function renderDistributed(d) {
  const card = $('distributed');
  card.hidden = !d;
  if (!d) return;
  if (!(view.status.nodes || []).length) {
    $('graph').replaceChildren(Object.assign(document.createElement('p'), {
      className: 'empty',
      textContent: 'a distributed member: its tasks run the pipeline (below)',
    }));
  }
  $('member').textContent = `worker ${d.worker} in consumer group ${d.group}`;
  const row = (cells) => {
    const tr = document.createElement('tr');
    for (const [text, num] of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      if (num) td.className = 'num';
      tr.append(td);
    }
    return tr;
  };
  $('members').querySelector('tbody').replaceChildren(
    ...(d.members || []).map(([worker, parts]) => row([[worker], [(parts || []).join(', ') || '—']])),
  );
  $('tasks').querySelector('tbody').replaceChildren(
    ...(d.tasks || []).map((t) => row([
      [t.task],
      [fmtCount(t.rows_in), true],
      [fmtCount(t.lag), true],
      [t.watermark_ms == null ? '—' : t.watermark_ms >= 8.64e15 ? 'end' : fmtTime(t.watermark_ms), true],
      [t.last_checkpoint == null ? '—' : `#${t.last_checkpoint}`, true],
      [fmtDuration((t.checkpoint_age_s || 0) * 1000), true],
      [t.restored_from == null ? '—' : `#${t.restored_from}`, true],
    ])),
  );
}

function badgeClass(prefix, value) {
  return `badge ${prefix}-${String(value).toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
}

function renderHeader(st) {
  $('pipeline-name').textContent = st.name || view.name;
  const state = $('state');
  state.textContent = st.state || 'unknown';
  state.className = badgeClass('state', st.state || 'unknown');
  state.hidden = false;
  const health = $('health');
  const h = st.health == null ? 'unknown'
    : typeof st.health === 'object' ? (st.health.status || 'unknown') : String(st.health);
  health.textContent = h;
  health.className = `badge health-${healthLevel(h)}`;
  health.hidden = false;
  health.title = typeof st.health === 'object' ? JSON.stringify(st.health) : `health: ${h}`;
  const failure = $('failure');
  failure.textContent = st.error ? `The pipeline failed: ${st.error}` : '';
  failure.hidden = !st.error;
  tickUptime();
}

function healthLevel(h) {
  h = h.toLowerCase();
  if (['ok', 'healthy', 'good'].includes(h)) return 'ok';
  if (/warn|degrad|lag|slow|backpress/.test(h)) return 'warn';
  if (/fail|error|unhealthy|critical|down|dead/.test(h)) return 'bad';
  return 'unknown';
}

// Uptime advances locally between status events; this is display only, not a data poll.
function tickUptime() {
  const st = view.status;
  if (!st || !Number.isFinite(st.uptime_s)) { $('uptime').textContent = '—'; return; }
  const extra = st.state === 'running' ? performance.now() - view.statusAt : 0;
  $('uptime').textContent = fmtDuration(st.uptime_s * 1000 + extra);
}
setInterval(tickUptime, 1000);

function renderCheckpoint(cp) {
  const p = $('checkpoint');
  renderCheckpointHistory(cp);
  if (!cp) { p.textContent = 'no checkpoints'; return; }
  const at = toMs(cp.time_ms ?? cp.completed_ms ?? cp.timestamp_ms ?? cp.time);
  const parts = [cp.id == null ? 'no checkpoint completed yet' : `checkpoint #${cp.id}`];
  if (Number.isFinite(at)) parts.push(`at ${new Date(at).toISOString()} (${fmtDuration(Date.now() - at)} ago)`);
  if (Number.isFinite(cp.duration_ms)) parts.push(`took ${fmtDuration(cp.duration_ms)}`);
  if (Number.isFinite(cp.size_bytes)) parts.push(fmtBytes(cp.size_bytes));
  if (Number.isFinite(cp.restored_from)) parts.push(`resumed from #${cp.restored_from}`);
  if (Array.isArray(cp.failed) && cp.failed.length) parts.push(`${cp.failed.length} failed (last: ${cp.failed[cp.failed.length - 1]})`);
  p.textContent = parts.join(' · ');
}

// The last checkpoints (newest first) with their size and duration, and the failures.
function renderCheckpointHistory(cp) {
  const history = (cp && Array.isArray(cp.history)) ? cp.history : [];
  const failed = (cp && Array.isArray(cp.failed)) ? cp.failed : [];
  $('checkpoint-history').hidden = !history.length && !failed.length;
  $('cp-history').tBodies[0].replaceChildren(...history.slice().reverse().map((h) => el('tr', null,
    el('td', { text: `#${h.id}` }),
    el('td', { class: 'mono', title: fmtIso(h.time_ms), text: fmtTime(h.time_ms) }),
    el('td', { class: 'num', text: fmtDuration(h.duration_ms) }),
    el('td', { class: 'num', text: fmtBytes(h.size_bytes) }))));
  $('cp-failures').replaceChildren(...failed.map((f) => el('li', { class: 'bad', text: `failed: ${f}` })));
}

function renderOperators(nodes) {
  const rows = nodes.map((n) => {
    const bp = view.backpressure.get(n.id);
    const blockedS = Number.isFinite(n.blocked_ms) ? `${(n.blocked_ms / 1000).toFixed(1)} s blocked in total` : '';
    const bar = el('span', { class: 'bar' }, el('span'));
    bar.firstChild.style.width = `${bp || 0}%`;
    const bpCell = el('td', { class: 'bp', title: blockedS },
      bp == null ? el('span', { class: 'muted', text: blockedS ? `${(n.blocked_ms / 1000).toFixed(1)} s` : '—' })
        : [bar, ` ${bp.toFixed(0)}%`]);
    if (bp >= 50) bpCell.classList.add('hot');
    const lag = n.watermark_lag_ms;
    const label = n.problem
      ? el('td', null, [n.label, ' ', el('span', { class: 'problem', title: n.problem, text: `⚠ ${n.problem}` })])
      : el('td', { text: n.label });
    return el('tr', { 'data-node-id': n.id, class: n.problem ? 'has-problem' : '' },
      label,
      el('td', null, el('span', { class: `kind kind-${kindClass(n.kind)}`, text: n.kind })),
      el('td', { class: 'num', text: fmtRate(n.rows_in_per_s) }),
      el('td', { class: 'num', text: fmtRate(n.rows_out_per_s) }),
      el('td', { class: 'num', text: fmtCount(n.rows_in) }),
      el('td', { class: 'num', text: fmtCount(n.rows_out) }),
      el('td', { class: 'mono', text: n.watermark_ms == null ? '—' : fmtIso(n.watermark_ms) }),
      el('td', { class: `num${lag > 10000 ? ' warn' : ''}`, text: lag == null ? '—' : fmtDuration(lag) }),
      bpCell,
      el('td', { class: `num${n.late_rows > 0 ? ' warn' : ''}`, text: fmtCount(n.late_rows) }),
      el('td', { class: `num${n.dead_letters > 0 ? ' bad' : ''}`, text: fmtCount(n.dead_letters) }));
  });
  $('operators').tBodies[0].replaceChildren(...rows);
}

function kindClass(kind) {
  return KNOWN_KINDS.includes(kind) ? kind : 'other';
}

// ---------------------------------------------------------------- pipeline graph

const NODE_W = 176;
const NODE_H = 50;
const GAP_X = 72;
const GAP_Y = 18;
const PAD = 12;

// Column = longest path from a source, so every edge points rightwards.
function depths(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  const indeg = new Map(nodes.map((n) => [n.id, 0]));
  const out = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) {
    if (!out.has(e.from) || !indeg.has(e.to)) continue;
    out.get(e.from).push(e.to);
    indeg.set(e.to, indeg.get(e.to) + 1);
  }
  const queue = nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
  while (queue.length) {
    const id = queue.shift();
    for (const to of out.get(id)) {
      depth.set(to, Math.max(depth.get(to), depth.get(id) + 1));
      indeg.set(to, indeg.get(to) - 1);
      if (indeg.get(to) === 0) queue.push(to);
    }
  }
  return depth;
}

function drawGraph(nodes, edges) {
  if (!nodes.length) return el('p', { class: 'empty', text: 'no operators' });
  const depth = depths(nodes, edges);
  const columns = [];
  for (const n of [...nodes].sort((a, b) => a.id - b.id)) {
    const d = depth.get(n.id);
    (columns[d] = columns[d] || []).push(n);
  }
  // Order each column by where its inputs sit (barycenter), which removes most crossings.
  const rank = new Map();
  const parents = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) if (parents.has(e.to)) parents.get(e.to).push(e.from);
  for (const col of columns) {
    if (!col) continue;
    const at = (n) => {
      const r = parents.get(n.id).filter((p) => rank.has(p)).map((p) => rank.get(p));
      return r.length ? r.reduce((a, b) => a + b, 0) / r.length : Infinity;
    };
    col.sort((a, b) => (at(a) - at(b)) || (a.id - b.id));
    col.forEach((n, i) => rank.set(n.id, i - (col.length - 1) / 2)); // columns are centred
  }
  const tallest = Math.max(...columns.map((c) => (c ? c.length : 0)));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * GAP_X;
  const pos = new Map();
  columns.forEach((col, d) => {
    if (!col) return;
    const colH = col.length * NODE_H + (col.length - 1) * GAP_Y;
    col.forEach((n, i) => pos.set(n.id, {
      x: PAD + d * (NODE_W + GAP_X),
      y: (height - colH) / 2 + i * (NODE_H + GAP_Y),
    }));
  });

  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'pipeline graph',
  }, svg('defs', null, svg('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow-head' }))));

  for (const e of edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const bend = Math.max(30, Math.abs(x2 - x1) / 2);
    const hash = e.partitioning === 'hash';
    root.append(svg('path', {
      class: `edge${hash ? ' hash' : ''}`,
      d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
      'marker-end': 'url(#arrow)',
    }, svg('title', { text: `${e.from} → ${e.to} (${e.partitioning})` })));
    if (hash) {
      root.append(svg('text', { class: 'edge-label', x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, 'text-anchor': 'middle', text: 'hash' }));
    }
  }

  for (const n of nodes) {
    const p = pos.get(n.id);
    const label = String(n.label ?? n.id);
    root.append(svg('g', {
      class: `graph-node kind-${kindClass(n.kind)}`, 'data-node-id': n.id, transform: `translate(${p.x},${p.y})`,
    },
    svg('title', { text: `${label}\n${n.kind} ×${n.parallelism}` }),
    svg('rect', { width: NODE_W, height: NODE_H, rx: 7 }),
    svg('text', { class: 'node-label', x: 12, y: 21, text: label.length > 22 ? `${label.slice(0, 21)}…` : label }),
    svg('text', { class: 'node-meta', x: 12, y: 39, text: `${n.kind}  ×${n.parallelism ?? 1}` })));
  }
  return root;
}

// ---------------------------------------------------------------- panels

function rebuildPanels(defs) {
  if (view.rowsStream) view.rowsStream.close();
  view.panels.clear();
  const host = $('panels');
  host.replaceChildren();
  for (const def of defs) {
    const Kind = def.view === 'timeseries' ? SeriesPanel : def.view === 'gallery' ? GalleryPanel : TablePanel;
    const panel = new Kind(def);
    view.panels.set(def.name, panel);
    host.append(panel.el);
  }
  // Every table's rows over one connection: a browser opens at most six per server,
  // and the frames' images need some of them.
  if (!defs.length) { view.rowsStream = null; return; }
  const names = defs.map((d) => encodeURIComponent(d.name)).join(',');
  const route = (m) => { const p = view.panels.get(m.panel); if (p) p.onRows(m); };
  view.rowsStream = openStream(`/api/streams?panels=${names}`, { rows: route, message: route });
}

class Panel {
  constructor(def) {
    this.def = def;
    this.updated = 0;
    this.rowsSeen = 0;
    this.meta = el('span', { class: 'panel-meta' });
    this.body = el('div', { class: 'panel-body' }, el('p', { class: 'empty', text: 'waiting for rows…' }));
    this.el = el('section', { class: `panel view-${this.viewName()}`, 'data-panel': def.name },
      el('header', { class: 'panel-head' }, el('h2', { text: def.title || def.name }), this.meta),
      this.body);
    this.clear();
  }

  viewName() { return 'table'; }

  get maxRows() { return this.def.max_rows > 0 ? this.def.max_rows : DEFAULT_MAX_ROWS; }

  keyOf(row) {
    const k = this.def.key ? row[this.def.key] : undefined;
    return k === undefined ? undefined : `k:${typeof k === 'object' ? JSON.stringify(k) : k}`;
  }

  onRows(msg) {
    if (msg.reset) this.clear();
    this.rowsSeen += (msg.rows || []).length;
    for (const row of msg.rows || []) {
      if (!row || typeof row !== 'object') continue;
      // An updating result's retraction (-U, -D) takes the row away; +U replaces it.
      if (row._op === '-U' || row._op === '-D') this.retract(row);
      else this.add(row);
    }
    this.updated = Date.now();
    schedule(this);
  }

  // Views that keep one entry per key replace it on +U; others ignore retractions.
  retract(_row) {}

  setMeta(text) {
    this.meta.textContent = this.updated ? `${text} · updated ${fmtClock(this.updated)}` : text;
  }

}

// Rows live in a Map in update order (oldest first), so an upsert is delete + set and
// trimming drops the least recently updated row.
class TablePanel extends Panel {
  clear() { this.rows = new Map(); this.seq = 0; }

  add(row) {
    const k = this.keyOf(row) ?? `s:${this.seq++}`;
    this.rows.delete(k);
    this.rows.set(k, row);
    while (this.rows.size > this.maxRows) this.rows.delete(this.rows.keys().next().value);
  }

  retract(row) {
    const k = this.keyOf(row);
    if (k !== undefined) { this.rows.delete(k); return; }
    const data = (r) => JSON.stringify(Object.entries(r).filter(([c]) => !c.startsWith('_')));
    const want = data(row);
    for (const [key, r] of this.rows) if (data(r) === want) { this.rows.delete(key); return; }
  }

  columns() {
    const cols = (this.def.columns || []).filter((c) => !c.name.startsWith('_'));
    if (cols.length) return cols;
    const first = this.rows.values().next().value || {};
    return Object.keys(first).filter((k) => !k.startsWith('_')).map((name) => ({ name, type: null }));
  }

  render() {
    const rows = [...this.rows.values()].reverse();
    this.setMeta(`${rows.length} row${rows.length === 1 ? '' : 's'}`);
    if (!rows.length) {
      this.body.replaceChildren(el('p', { class: 'empty', text: 'no rows yet' }));
      this.table = null;
      return;
    }
    const cols = this.columns();
    const sig = cols.map((c) => c.name).join('\u0000');
    if (!this.table || this.tableSig !== sig) {
      this.tableSig = sig;
      this.table = el('table', { class: 'data sortable' },
        el('thead', null, el('tr', null, cols.map((c) => el('th', { title: `${c.type || ''} · click to sort`, text: c.name,
          'data-col': c.name })))),
        el('tbody'));
      // Click a header to sort by it; again to reverse; a third time for arrival order.
      this.table.tHead.addEventListener('click', (ev) => {
        const th = ev.target.closest('th[data-col]');
        if (!th) return;
        const col = th.dataset.col;
        if (this.sortCol !== col) { this.sortCol = col; this.sortDesc = false; }
        else if (!this.sortDesc) this.sortDesc = true;
        else this.sortCol = null;
        schedule(this);
      });
      this.body.replaceChildren(el('div', { class: 'table-wrap' }, this.table));
    }
    for (const th of this.table.tHead.rows[0].cells) {
      const on = th.dataset.col === this.sortCol;
      th.classList.toggle('sorted', on);
      th.setAttribute('aria-sort', on ? (this.sortDesc ? 'descending' : 'ascending') : 'none');
      th.dataset.dir = on ? (this.sortDesc ? '▼' : '▲') : '';
    }
    if (this.sortCol) {
      const c = this.sortCol;
      const cmp = (a, b) => {
        const x = a[c]; const y = b[c];
        if (x == null || y == null) return (x == null) - (y == null);
        if (typeof x === 'number' && typeof y === 'number') return x - y;
        return collator.compare(String(x), String(y));
      };
      rows.sort((a, b) => (this.sortDesc ? -cmp(a, b) : cmp(a, b)));
    }
    const numeric = (c) => /INT|DOUBLE|FLOAT|DECIMAL|REAL|NUMERIC/i.test(c.type || '');
    const isTime = (c) => /TIMESTAMP|DATE/i.test(c.type || '');
    const isScore = (c) => /score|confidence|probability/i.test(c.name) && numeric(c);
    this.table.tBodies[0].replaceChildren(...rows.map((r) => el('tr', { class: 'row' },
      cols.map((c) => el('td', {
        class: [numeric(c) ? 'num' : '', isScore(c) ? scoreClass(r[c.name]) : ''].filter(Boolean).join(' ') || null,
        title: isTime(c) && r[c.name] != null ? fmtIso(r[c.name]) : null,
        text: isScore(c) ? fmtScore(r[c.name]) : fmtCell(r[c.name], c.type),
      })))));
  }
}

class SeriesPanel extends Panel {
  viewName() { return 'timeseries'; }

  clear() { this.series = new Map(); this.timeAxis = false; }

  axes() {
    const cols = this.def.columns || [];
    const x = this.def.x || (cols.find((c) => /TIMESTAMP/i.test(c.type || '')) || cols[0] || {}).name;
    const y = this.def.y || (cols.find((c) => c.name !== x && /INT|DOUBLE|FLOAT|DECIMAL|REAL|NUMERIC/i.test(c.type || '')) || {}).name;
    return { x, y };
  }

  add(row) {
    const { x: xc, y: yc } = this.axes();
    const rawX = row[xc];
    const x = toMs(rawX);
    const y = row[yc] == null ? NaN : Number(row[yc]);
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    if (typeof rawX === 'string' || x > 1e11) this.timeAxis = true;
    const name = this.def.series ? String(row[this.def.series] ?? 'null') : (yc || 'value');
    let pts = this.series.get(name);
    if (!pts) this.series.set(name, (pts = []));
    // Keep points sorted by x; a repeated x (a window re-emitted) replaces its point.
    let i = pts.length;
    while (i > 0 && pts[i - 1].x > x) i--;
    if (i > 0 && pts[i - 1].x === x) pts[i - 1].y = y;
    else pts.splice(i, 0, { x, y });
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
  }

  render() {
    const names = [...this.series.keys()].sort(collator.compare);
    const all = names.flatMap((n) => this.series.get(n));
    this.setMeta(`${names.length} series · ${all.length} points`);
    if (!all.length) {
      this.body.replaceChildren(el('p', { class: 'empty', text: 'no points yet' }));
      return;
    }
    const { x: xName, y: yName } = this.axes();
    const W = Math.max(280, this.body.clientWidth || 560);
    const H = 230;
    const m = { l: 56, r: 14, t: 12, b: 40 };
    let x0 = Math.min(...all.map((p) => p.x));
    let x1 = Math.max(...all.map((p) => p.x));
    let y0 = Math.min(...all.map((p) => p.y));
    let y1 = Math.max(...all.map((p) => p.y));
    if (x0 === x1) { x0 -= 1000; x1 += 1000; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const yt = niceTicks(y0, y1, 5);
    y0 = Math.min(y0, yt[0]);
    y1 = Math.max(y1, yt[yt.length - 1]);
    const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);

    const chart = svg('svg', { class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': this.def.title || this.def.name });
    for (const t of yt) {
      chart.append(svg('line', { class: 'grid', x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }),
        svg('text', { class: 'tick', x: m.l - 6, y: sy(t) + 4, 'text-anchor': 'end', text: tickFmt.format(t) }));
    }
    const xTicks = Math.max(2, Math.min(6, Math.floor((W - m.l - m.r) / 110)));
    for (let i = 0; i <= xTicks; i++) {
      const v = x0 + ((x1 - x0) * i) / xTicks;
      chart.append(svg('text', {
        class: 'tick', x: sx(v), y: H - m.b + 16, 'text-anchor': i === 0 ? 'start' : i === xTicks ? 'end' : 'middle',
        text: this.timeAxis ? fmtClock(v) : tickFmt.format(v),
      }));
    }
    chart.append(
      svg('line', { class: 'axis', x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }),
      svg('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }),
      svg('text', { class: 'axis-label', x: (m.l + W - m.r) / 2, y: H - 4, 'text-anchor': 'middle', text: xName }),
      svg('text', { class: 'axis-label', transform: `translate(12,${(m.t + H - m.b) / 2}) rotate(-90)`, 'text-anchor': 'middle', text: yName }));

    const legend = el('ul', { class: 'legend' });
    // Series with the same values lie on top of each other: each gets a dash pattern and
    // a marker shape besides its colour, so every one stays visible where they overlap,
    // and hovering a legend entry brings its series to the front.
    names.forEach((name, i) => {
      const color = PALETTE[i % PALETTE.length];
      const dash = DASHES[i % DASHES.length];
      const pts = this.series.get(name);
      const last = pts[pts.length - 1];
      const group = svg('g', { class: 'series', 'data-series': name },
        svg('polyline', { class: 'line', stroke: color, 'stroke-dasharray': dash || null,
          points: pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ') }),
        ...pts.slice(-MARKERS).map((p) => marker(i, sx(p.x), sy(p.y), color)),
        svg('title', { text: `${name}: ${fmtCell(last.y)}` }));
      chart.append(group);
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = dash ? `repeating-linear-gradient(90deg, ${color} 0 5px, transparent 5px 8px)` : color;
      const item = el('li', null, swatch, `${name} `, el('span', { class: 'muted', text: fmtCell(last.y) }));
      item.addEventListener('mouseenter', () => { chart.append(group); group.classList.add('hot'); });
      item.addEventListener('mouseleave', () => group.classList.remove('hot'));
      legend.append(item);
    });
    this.body.replaceChildren(chart, legend);
  }
}

const DASHES = ['', '6 3', '2 3', '9 3 2 3'];
const MARKERS = 12; // points marked at the end of each series

// Series `i`'s marker: circle, square, triangle or diamond.
function marker(i, x, y, color) {
  const r = 3;
  switch (i % 4) {
    case 1: return svg('rect', { x: x - r, y: y - r, width: 2 * r, height: 2 * r, fill: color });
    case 2: return svg('path', { d: `M${x},${y - r - 1} L${x + r + 1},${y + r} L${x - r - 1},${y + r} z`, fill: color });
    case 3: return svg('path', { d: `M${x},${y - r - 1} L${x + r + 1},${y} L${x},${y + r + 1} L${x - r - 1},${y} z`, fill: color });
    default: return svg('circle', { cx: x, cy: y, r, fill: color });
  }
}

function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 0.5 && ticks.length < 50; v += step) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

// One card per key; cards are kept and updated in place so images don't flicker.
class GalleryPanel extends Panel {
  viewName() { return 'gallery'; }

  // Cards survive a reset (reconnect); render() drops those whose key is gone.
  clear() {
    this.items = new Map();
    this.seq = 0;
    if (!this.cards) this.cards = new Map();
  }

  keyOf(row) {
    const col = this.def.key || 'key';
    const k = row[col];
    return k == null ? `#${this.seq++}` : String(k);
  }

  add(row) {
    const k = this.keyOf(row);
    this.items.delete(k);
    this.items.set(k, row);
    while (this.items.size > this.maxRows) this.items.delete(this.items.keys().next().value);
  }

  render() {
    const keys = [...this.items.keys()].sort(collator.compare);
    this.setMeta(`${keys.length} item${keys.length === 1 ? '' : 's'}`);
    if (!keys.length) {
      this.body.replaceChildren(el('p', { class: 'empty', text: 'no images yet' }));
      this.grid = null;
      this.cards.clear();
      return;
    }
    if (!this.grid) {
      this.grid = el('div', { class: 'gallery' });
      this.body.replaceChildren(this.grid);
    }
    for (const [k, card] of this.cards) {
      if (!this.items.has(k)) { card.root.remove(); this.cards.delete(k); }
    }
    keys.forEach((k, i) => {
      let card = this.cards.get(k);
      if (!card) this.cards.set(k, (card = makeCard()));
      updateCard(card, k, this.items.get(k));
      if (this.grid.children[i] !== card.root) this.grid.insertBefore(card.root, this.grid.children[i] || null);
    });
  }
}

function makeCard() {
  const img = el('img', { class: 'gallery-img', alt: '', decoding: 'async' });
  // Detected objects (a row's `objects` column, as detect() returns it) are drawn over
  // the frame in the image's own pixels: the SVG's viewBox is the image's natural size
  // and it letterboxes like the image's `object-fit: contain`.
  const boxes = document.createElementNS(SVG_NS, 'svg');
  boxes.setAttribute('class', 'boxes');
  boxes.setAttribute('preserveAspectRatio', 'xMidYMid meet');
  const card = {
    img,
    boxes,
    src: null,
    objects: null,
    drawn: null,
    key: el('strong', { class: 'card-key' }),
    label: el('span', { class: 'card-label' }),
    score: el('span', { class: 'card-score' }),
    // The camera's recent results, newest first.
    history: [],
    historyList: el('ol', { class: 'card-history', title: 'recent frames of this camera' }),
  };
  img.addEventListener('error', () => card.root.classList.add('broken'));
  img.addEventListener('load', () => {
    card.root.classList.remove('broken');
    drawBoxes(card);
  });
  card.root = el('figure', { class: 'gallery-card' },
    el('div', { class: 'frame' }, img, boxes),
    el('figcaption', null, card.key, card.label, card.score),
    card.historyList);
  return card;
}

const HISTORY_FRAMES = 6;

// Adds a frame's result to its camera's history (once per frame) and redraws the list.
function rememberFrame(card, row, label) {
  const at = row.event_time ?? row.time ?? row._image ?? null;
  const id = `${at}\u0000${row.offset ?? ''}`;
  if (card.history.length && card.history[0].id === id) return;
  const objects = Array.isArray(row.objects) ? row.objects.length : null;
  card.history.unshift({ id, at, label, score: row.score, objects });
  card.history.length = Math.min(card.history.length, HISTORY_FRAMES);
  card.historyList.replaceChildren(...card.history.slice(1).map((h) => el('li', null,
    el('span', { class: 'mono', text: typeof h.at === 'number' || /^\d{4}-/.test(String(h.at)) ? fmtTime(h.at) : '' }),
    ` ${h.label || '—'} `,
    el('span', { class: scoreClass(h.score), text: fmtScore(h.score) }),
    h.objects ? el('span', { class: 'muted', text: ` · ${h.objects} object${h.objects === 1 ? '' : 's'}` }) : null)));
}

// Draws the card's objects once its frame has loaded (their boxes are in its pixels).
function drawBoxes(card) {
  const w = card.img.naturalWidth, h = card.img.naturalHeight;
  const objects = Array.isArray(card.objects) ? card.objects : [];
  const sig = `${card.img.currentSrc}|${w}x${h}|${JSON.stringify(objects)}`;
  if (!w || !h || card.drawn === sig) return;
  card.drawn = sig;
  card.boxes.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const stroke = Math.max(2, Math.round(Math.min(w, h) / 150));
  const font = Math.max(12, Math.round(Math.min(w, h) / 14));
  const shapes = [];
  for (const o of objects) {
    if (!o || ![o.x1, o.y1, o.x2, o.y2].every(Number.isFinite)) continue;
    const colour = classColour(String(o.label));
    const rect = document.createElementNS(SVG_NS, 'rect');
    rect.setAttribute('x', o.x1); rect.setAttribute('y', o.y1);
    rect.setAttribute('width', Math.max(0, o.x2 - o.x1));
    rect.setAttribute('height', Math.max(0, o.y2 - o.y1));
    rect.setAttribute('stroke', colour);
    rect.setAttribute('stroke-width', stroke);
    rect.setAttribute('fill', 'none');
    const text = document.createElementNS(SVG_NS, 'text');
    text.setAttribute('x', o.x1 + stroke);
    text.setAttribute('y', Math.max(font, o.y1 + font));
    text.setAttribute('font-size', font);
    text.setAttribute('fill', colour);
    text.setAttribute('class', 'box-label');
    text.textContent = `${o.label} ${fmtScore(o.score)}`;
    shapes.push(rect, text);
  }
  card.boxes.replaceChildren(...shapes);
  card.root.dataset.objects = String(shapes.length / 2);
}

// A stable, distinguishable colour per class name.
function classColour(label) {
  let h = 0;
  for (const c of label) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 85% 45%)`;
}

function updateCard(card, key, row) {
  const src = typeof row._image === 'string' && row._image ? withToken(row._image) : null;
  if (src !== card.src) {
    card.src = src;
    // Until the new frame has loaded the browser keeps showing the previous one.
    if (src) card.img.src = src; else card.img.removeAttribute('src');
    card.root.classList.toggle('no-image', !src);
  }
  const label = row.label == null ? '' : String(row.label);
  const score = fmtScore(row.score);
  if (card.key.textContent !== key) card.key.textContent = key;
  if (card.label.textContent !== label) card.label.textContent = label;
  if (card.score.textContent !== score) card.score.textContent = score;
  card.score.className = `card-score ${scoreClass(row.score)}`;
  if ('objects' in row) {
    card.objects = row.objects;
    if (card.img.complete) drawBoxes(card);
  }
  rememberFrame(card, row, label);
  card.root.title = Object.entries(row).filter(([k]) => !k.startsWith('_'))
    .map(([k, v]) => `${k}: ${fmtCell(v)}`).join('\n');
}

// ---------------------------------------------------------------- hosted pipelines

// On `runnel serve`: the submitted pipelines with start / stop, and an editor to submit
// one (its errors marked at their line and column).
let hostingTimer = null;

function renderHosted(list, hosting) {
  $('hosting').hidden = !hosting;
  if (!hosting) return;
  const rows = list.map((p) => {
    const running = p.state === 'running' || p.state === 'starting';
    const act = (what) => el('button', { type: 'button', class: 'act', text: what, 'data-action': what,
      'data-pipeline': p.name });
    const actions = [];
    if (p.hosted) actions.push(running ? act('stop') : act('start'));
    if (p.hosted && !running) actions.push(act('delete'));
    const link = el('a', { href: `?pipeline=${encodeURIComponent(p.name)}`, text: p.name });
    return el('tr', { class: p.name === view.name ? 'current' : '' },
      el('td', null, link),
      el('td', null, el('span', { class: badgeClass('state', p.state), text: p.state })),
      el('td', { class: p.error ? 'bad' : 'muted', text: p.error || (p.savepoint ? `savepoint ${p.savepoint}` : '') }),
      el('td', null, actions));
  });
  $('hosted').tBodies[0].replaceChildren(...rows);
  if (!hostingTimer) hostingTimer = setInterval(refreshHosted, 3000);
}

async function refreshHosted() {
  try {
    const res = await apiFetch('/api/pipelines');
    if (!res.ok) return;
    const body = await res.json();
    renderHosted(body.pipelines || [], Boolean(body.hosting));
  } catch { /* the connection indicator reports it */ }
}

async function control(name, action) {
  const path = `/api/pipelines/${encodeURIComponent(name)}`;
  const res = action === 'delete'
    ? await apiFetch(path, { method: 'DELETE' })
    : await apiFetch(`${path}/${action}`, { method: 'POST', headers: { 'Content-Type': 'application/json' } });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    showSqlError(`${action} ${name}: ${body.detail || `HTTP ${res.status}`}`);
  }
  await refreshHosted();
}

function showSqlError(text, line, column, ok = false) {
  $('sql-error').textContent = text || '';
  $('sql-error').classList.toggle('ok', ok);
  const editor = $('sql-editor');
  editor.classList.toggle('has-error', Boolean(line));
  if (!line) return;
  // Select the offending line from its column, so the cursor lands on the mistake.
  const lines = editor.value.split('\n');
  let start = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i += 1) start += lines[i].length + 1;
  const len = (lines[line - 1] || '').length;
  const from = start + Math.min(Math.max((column || 1) - 1, 0), len);
  editor.focus();
  editor.setSelectionRange(from, start + len);
  editor.dataset.errorLine = String(line);
  if (column) editor.dataset.errorColumn = String(column); else delete editor.dataset.errorColumn;
}

async function submitPipeline(ev) {
  ev.preventDefault();
  const sql = $('sql-editor').value;
  const name = $('sql-name').value.trim();
  showSqlError('');
  const res = await apiFetch('/api/pipelines', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(name ? { sql, name } : { sql }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const where = body.line ? `line ${body.line}${body.column ? `, column ${body.column}` : ''}: ` : '';
    const detail = String(body.detail || `HTTP ${res.status}`).replace(/^line \d+(, column \d+)?: /, '');
    showSqlError(`${where}${detail}`, body.line, body.column);
    return;
  }
  showSqlError(`submitted ${body.name}`, null, null, true);
  await refreshHosted();
  if (!view.name) discover();
}

$('submit-form').addEventListener('submit', submitPipeline);
$('hosted').addEventListener('click', (ev) => {
  const b = ev.target.closest('button[data-action]');
  if (b) control(b.dataset.pipeline, b.dataset.action);
});

// ---------------------------------------------------------------- start

window.addEventListener('resize', () => {
  for (const p of view.panels.values()) if (p instanceof SeriesPanel) schedule(p);
});

discover();
