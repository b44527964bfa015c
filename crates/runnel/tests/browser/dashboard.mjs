#!/usr/bin/env node
// Drives the runnel dashboard in headless Chromium and checks that it shows live data.
//
//   node dashboard.mjs --url http://127.0.0.1:PORT/ --screenshot out.png \
//     [--token T] [--expect-gallery] [--expect-boxes] [--expect-rows N] [--expect-quality] [--timeout-ms 20000]
//
// Prints one JSON line on stdout; exits 0 when everything expected appeared, 1 otherwise.
import { chromium } from 'playwright-core';

function usage(msg) {
  process.stderr.write(`dashboard.mjs: ${msg}\n` +
    'usage: node dashboard.mjs --url URL --screenshot PATH [--token T] [--expect-gallery] [--expect-boxes] ' +
    '[--expect-rows N] [--expect-quality] [--timeout-ms MS]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, screenshot: null, token: null, expectGallery: false, expectBoxes: false, expectRows: 0, expectQuality: false, expectReady: false, expectDeadLetters: false, badSql: null, goodSql: null, pipeline: null, timeoutMs: 20000 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--url': opts.url = value(); break;
      case '--screenshot': opts.screenshot = value(); break;
      case '--token': opts.token = value(); break;
      case '--expect-gallery': opts.expectGallery = true; break;
      case '--expect-boxes': opts.expectBoxes = true; break;
      case '--expect-quality': opts.expectQuality = true; break;
      case '--expect-ready': opts.expectReady = true; break;
      case '--expect-dead-letters': opts.expectDeadLetters = true; break;
      // Drive the SQL editor of `runnel serve`: a script that does not plan (its error
      // must be marked), then one that does (named --pipeline), then stop it.
      case '--bad-sql': opts.badSql = value(); break;
      case '--good-sql': opts.goodSql = value(); break;
      case '--pipeline': opts.pipeline = value(); break;
      case '--expect-rows':
        // The count is optional: a bare --expect-rows means at least one row.
        opts.expectRows = /^\d+$/.test(argv[i + 1] || '') ? Number(argv[++i]) : 1;
        break;
      case '--timeout-ms': opts.timeoutMs = Number(value()); break;
      default: usage(`unknown argument ${arg}`);
    }
  }
  if (!opts.url) usage('--url is required');
  if (!opts.screenshot) usage('--screenshot is required');
  if (!(opts.timeoutMs > 0)) usage('--timeout-ms must be a positive number');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// Console lines and URLs may carry the token (SSE and image URLs take it as a query
// parameter); none of it may reach CI logs.
function redact(text) {
  let out = String(text).replace(/access_token=[^&\s"']*/g, 'access_token=REDACTED');
  if (opts.token) out = out.split(opts.token).join('REDACTED');
  return out;
}

// Never outlive the caller's budget, even if the browser hangs.
const watchdog = setTimeout(() => {
  process.stderr.write('dashboard.mjs: hard timeout, browser did not respond\n');
  process.exit(1);
}, opts.timeoutMs + 30000);
watchdog.unref();

const consoleErrors = [];
const failedRequests = [];
const counts = { graph_nodes: 0, rows: 0, rows_total: 0, gallery_images: 0, gallery_boxes: 0, quality_violations: 0, quality_columns: 0, ready: false, dead_letters: 0, named_nodes: [], sql_error: '', sql_error_line: null, submitted_state: '', stopped_state: '' };

function missing() {
  const out = [];
  if (counts.graph_nodes < 1) out.push('no .graph-node in the pipeline graph');
  if (opts.expectRows > 0 && counts.rows < opts.expectRows) {
    out.push(`fewer than ${opts.expectRows} tr.row in any panel (most in one panel: ${counts.rows})`);
  }
  if (opts.expectGallery && counts.gallery_images < 1) out.push('no loaded img.gallery-img (naturalWidth > 0)');
  if (opts.expectBoxes && counts.gallery_boxes < 1) out.push('no detected object drawn over a gallery frame (svg.boxes rect)');
  if (opts.expectQuality && counts.quality_violations < 1) {
    out.push('no rule with violations in the Data quality panel (#quality .quality-rules td.bad)');
  }
  if (opts.expectQuality && counts.quality_columns < 1) out.push('no profiled column in #quality .quality-profile');
  if (opts.expectReady && !counts.ready) out.push('no data-ready attribute on <body>');
  if (opts.expectDeadLetters && counts.dead_letters < 1) out.push('no dead letter with its reason in #dead-letters');
  return out;
}

function measure() {
  const panelRows = [...document.querySelectorAll('section.panel')]
    .map((p) => p.querySelectorAll('tr.row').length);
  return {
    graph_nodes: document.querySelectorAll('.graph-node').length,
    rows: Math.max(0, ...panelRows),
    rows_total: document.querySelectorAll('tr.row').length,
    gallery_images: [...document.querySelectorAll('img.gallery-img')]
      .filter((img) => img.complete && img.naturalWidth > 0).length,
    gallery_boxes: document.querySelectorAll('.gallery-card svg.boxes rect').length,
    quality_violations: [...document.querySelectorAll('#quality:not([hidden]) .quality-rules td.bad')]
      .filter((td) => td.offsetParent !== null).length,
    quality_columns: document.querySelectorAll('#quality:not([hidden]) .quality-profile tbody tr').length,
    ready: document.body.dataset.ready === 'true',
    dead_letters: document.querySelectorAll('#problems:not([hidden]) #dead-letters tbody tr td.bad').length,
    named_nodes: [...document.querySelectorAll('#operators tbody tr td:first-child')].map((td) => td.textContent),
  };
}

// The state shown for `name` in the list of hosted pipelines.
async function hostedState(page, name) {
  return page.evaluate((n) => {
    for (const tr of document.querySelectorAll('#hosted tbody tr')) {
      if (tr.cells[0].textContent === n) return tr.cells[1].textContent;
    }
    return '';
  }, name);
}

async function waitFor(fn, deadline) {
  for (;;) {
    const v = await fn();
    if (v || Date.now() >= deadline) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Submits a bad and a good script through the editor.
async function driveEditor(page, deadline, problems) {
  const fs = await import('node:fs');
  await page.waitForSelector('#hosting:not([hidden])', { timeout: Math.max(1000, deadline - Date.now()) });
  await page.fill('#sql-editor', fs.readFileSync(opts.badSql, 'utf8'));
  await page.click('#submit-form button[type=submit]');
  counts.sql_error = await waitFor(() => page.textContent('#sql-error'), deadline);
  counts.sql_error_line = await page.evaluate(() => {
    const e = document.getElementById('sql-editor');
    return e.classList.contains('has-error') ? Number(e.dataset.errorLine) : null;
  });
  if (!counts.sql_error_line) problems.push(`the editor did not mark the error's line (${counts.sql_error})`);
  await page.fill('#sql-editor', fs.readFileSync(opts.goodSql, 'utf8'));
  await page.click('#submit-form button[type=submit]');
  counts.submitted_state = await waitFor(async () => {
    const s = await hostedState(page, opts.pipeline);
    return s === 'running' ? s : '';
  }, deadline);
  if (counts.submitted_state !== 'running') problems.push(`submitted pipeline ${opts.pipeline} is not listed as running`);
}

async function stopFromList(page, deadline, problems) {
  await page.click(`#hosted button[data-action=stop][data-pipeline="${opts.pipeline}"]`);
  counts.stopped_state = await waitFor(async () => {
    const s = await hostedState(page, opts.pipeline);
    return s === 'stopped' ? s : '';
  }, deadline + 15000);
  if (counts.stopped_state !== 'stopped') problems.push(`pipeline ${opts.pipeline} did not stop from the list`);
}

async function run() {
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
  } catch (err) {
    return { problems: [`cannot launch Chromium: ${err.message.split('\n')[0]}`], shot: false };
  }

  const problems = [];
  let shot = false;
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('console', (msg) => {
      if (msg.type() === 'error') consoleErrors.push(redact(msg.text()));
    });
    page.on('pageerror', (err) => consoleErrors.push(redact(`uncaught: ${err.message}`)));
    page.on('requestfailed', (req) => {
      const why = req.failure()?.errorText || 'failed';
      // Superseded image frames and SSE streams cut at page close are aborted on purpose.
      if (why.includes('ERR_ABORTED')) return;
      failedRequests.push(redact(`${req.method()} ${req.url()}: ${why}`));
    });
    page.on('response', (res) => {
      if (res.status() >= 400) failedRequests.push(redact(`${res.request().method()} ${res.url()}: HTTP ${res.status()}`));
    });

    if (opts.token) {
      await page.addInitScript((t) => {
        try { sessionStorage.setItem('runnel-token', t); } catch { /* opaque origin */ }
      }, opts.token);
    }

    const deadline = Date.now() + opts.timeoutMs;
    try {
      await page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: opts.timeoutMs });
    } catch (err) {
      problems.push(`cannot open ${redact(opts.url)}: ${redact(err.message.split('\n')[0])}`);
    }

    if (!problems.length && opts.goodSql) await driveEditor(page, deadline, problems);
    if (!problems.length) {
      for (;;) {
        try {
          Object.assign(counts, await page.evaluate(measure));
        } catch (err) {
          // A navigation in progress destroys the context; measure again next round.
          if (!/context was destroyed|navigat/i.test(err.message)) throw err;
        }
        if (!missing().length || Date.now() >= deadline) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      problems.push(...missing());
    }
    if (!problems.length && opts.goodSql) await stopFromList(page, deadline, problems);

    try {
      await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: 15000 });
      shot = true;
    } catch (err) {
      problems.push(`screenshot failed: ${err.message.split('\n')[0]}`);
    }
  } catch (err) {
    problems.push(`browser error: ${redact(err.message.split('\n')[0])}`);
  } finally {
    await browser.close().catch(() => {});
  }
  return { problems, shot };
}

const { problems, shot } = await run();
const ok = problems.length === 0;
process.stdout.write(`${JSON.stringify({
  ok,
  ...counts,
  console_errors: consoleErrors,
  failed_requests: failedRequests,
  ...(ok ? {} : { missing: problems }),
})}\n`);
if (!ok) {
  process.stderr.write(`dashboard.mjs: FAILED at ${redact(opts.url)} (timeout ${opts.timeoutMs} ms):\n` +
    problems.map((p) => `  - ${p}\n`).join('') +
    (shot ? `  (screenshot: ${opts.screenshot})\n` : '  (no screenshot taken)\n'));
}
process.exit(ok ? 0 : 1);
