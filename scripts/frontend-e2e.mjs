// Drives the Dev-Nexus web frontend in headless Chromium against a running nexusd and reports,
// per route and per tab, what the user would see go wrong: skill calls answering
// `success: false` (and which skill), HTTP errors, uncaught exceptions, console errors and error
// alerts on the page. Started by scripts/frontend-e2e, which builds the frontend, starts nexusd
// with a seeded knowledge base and serves the built files.
//
//   node frontend-e2e.mjs WEB_URL API_URL REPORT.json [ROUTE ...]
//
// NEXUSD_E2E_SCREENSHOTS=DIR saves a full-page screenshot of every view there.
//
// Exit status: 0 when every view loaded its data cleanly, 1 otherwise.

import fs from 'node:fs';
import puppeteer from 'puppeteer-core';

const [webUrl, apiUrl, reportPath, ...routeArgs] = process.argv.slice(2);
if (!webUrl || !apiUrl || !reportPath) {
  console.error('usage: node frontend-e2e.mjs WEB_URL API_URL REPORT.json [ROUTE ...]');
  process.exit(2);
}

// Every route of the frontend, with what a user does there before its tabs are swept: pick a
// repository, press the page's buttons. Each step is judged as a view of its own.
const SCENARIOS = [
  { route: '/' },
  // Analyze ends on the complexity page of the repository analysed.
  { route: '/repositories', steps: [{ click: 'Scan' }, { click: 'Analyze' }] },
  { route: '/repositories/initialize' },
  { route: '/patterns' },
  { route: '/components', steps: [{ choose: 'acme/zephyr' }] },
  { route: '/analytics' },
  { route: '/analytics/dependencies' },
  { route: `/complexity/${encodeURIComponent('acme/api')}` },
  { route: '/configuration' },
  { route: '/deployment', steps: [{ choose: 'acme/api' }, { css: '.MuiList-root li button', label: 'the copy button' }] },
  { route: '/agents' },
  {
    route: '/compliance',
    steps: [
      { fill: 'input[placeholder="e.g., patelmm79/dev-nexus"]', value: 'acme/api' },
      { click: 'Validate Repository' },
      { click: 'Get Suggestions' },
    ],
  },
];
const ROUTES = routeArgs.length ? SCENARIOS.filter((s) => routeArgs.includes(s.route)) : SCENARIOS;

// Failures the frontend expects and shows as a state, not an error: reported as notes.
const EXPECTED = [
  {
    skill: 'get_repository_complexity_details',
    match: /No complexity analysis stored/,
    why: 'every repository card asks for its stored complexity; a repository never analysed says so and its card offers Analyze',
  },
];

// How long the page may stay busy (requests in flight) after a navigation or a click; polling
// views never go idle, so this is an upper bound, not a wait that must succeed.
const SETTLE_MS = 2500;
const SETTLE_LIMIT_MS = 20000;

function chromiumPath() {
  for (const p of [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    if (p && fs.existsSync(p)) return p;
  }
  throw new Error('no chromium found (apt-get install chromium, or set CHROMIUM)');
}

// One view's findings, filled by the page's event handlers while the view is current.
function newView(name) {
  return { view: name, skills: {}, failures: [], notes: [], http_errors: [], page_errors: [], console_errors: [], alerts: [] };
}

async function settle(page) {
  const started = Date.now();
  try {
    await page.waitForNetworkIdle({ idleTime: SETTLE_MS, timeout: SETTLE_LIMIT_MS });
  } catch {
    // A view that polls keeps the network busy; what it showed by now is what is judged.
  }
  return Date.now() - started;
}

async function errorAlerts(page) {
  return page.$$eval(
    '.MuiAlert-standardError, .MuiAlert-filledError, .MuiAlert-outlinedError, .MuiAlert-colorError',
    (els) => els.map((e) => e.innerText.trim()).filter((t) => t.length > 0),
  );
}

async function tabs(page) {
  return page.$$eval('[role="tab"]', (els) => els.map((e, i) => ({ i, label: e.innerText.trim(), disabled: e.disabled })));
}

function stepLabel(step) {
  if (step.click) return `press "${step.click}"`;
  if (step.choose) return `choose ${step.choose}`;
  if (step.fill) return `type ${step.value}`;
  return `press ${step.label}`;
}

// Performs one step; false when the page has nothing to do it with.
async function runStep(page, step) {
  if (step.fill) {
    const input = await page.$(step.fill);
    if (!input) return false;
    await input.type(step.value);
    return true;
  }
  if (step.click) {
    const buttons = await page.$$('button');
    for (const b of buttons) {
      const text = await b.evaluate((e) => e.innerText.trim());
      const off = await b.evaluate((e) => e.disabled);
      if (!off && text.toLowerCase() === step.click.toLowerCase()) {
        await b.click();
        return true;
      }
    }
    return false;
  }
  if (step.css) {
    const target = await page.$(step.css);
    if (!target) return false;
    await target.click();
    return true;
  }
  // choose: an Autocomplete (an input) or a Select (a div), both role=combobox.
  const box = await page.$('[role="combobox"]');
  if (!box) return false;
  const isInput = await box.evaluate((e) => e.tagName === 'INPUT');
  if (isInput) await box.type(step.choose);
  else await box.click();
  try {
    await page.waitForSelector('[role="option"]', { timeout: 10000 });
  } catch {
    return false;
  }
  for (const o of await page.$$('[role="option"]')) {
    if ((await o.evaluate((e) => e.innerText.trim())) === step.choose) {
      await o.click();
      return true;
    }
  }
  return false;
}

async function main() {
  const browser = await puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  // The copy buttons write to the clipboard, which a headless page may only do when allowed.
  await browser.defaultBrowserContext().overridePermissions(webUrl, ['clipboard-read', 'clipboard-write']);
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  let current = newView('(start)');
  const views = [];

  page.on('pageerror', (err) => current.page_errors.push(String(err && err.message ? err.message : err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error') current.console_errors.push(msg.text().slice(0, 300));
  });
  page.on('response', async (res) => {
    const url = res.url();
    if (!url.startsWith(apiUrl)) return;
    const req = res.request();
    if (req.method() === 'OPTIONS') return;
    const path = url.slice(apiUrl.length);
    if (res.status() >= 400) current.http_errors.push(`${req.method()} ${path} → ${res.status()}`);
    if (!path.startsWith('/a2a/execute')) return;
    let skill = '?';
    try {
      skill = JSON.parse(req.postData() || '{}').skill_id || '?';
    } catch {}
    current.skills[skill] = (current.skills[skill] || 0) + 1;
    try {
      const body = await res.json();
      if (body && body.success === false) {
        const error = String(body.error || body.message || JSON.stringify(body)).slice(0, 200);
        const expected = EXPECTED.find((e) => e.skill === skill && e.match.test(error));
        if (expected) current.notes.push(`${skill}: ${expected.why}`);
        else current.failures.push(`${skill}: ${error}`);
      }
    } catch {
      current.failures.push(`${skill}: answer is not JSON`);
    }
  });

  const shots = process.env.NEXUSD_E2E_SCREENSHOTS;
  const finish = async (name) => {
    current.alerts = await errorAlerts(page);
    if (shots) {
      const file = `${shots}/${String(views.length).padStart(2, '0')}-${name.replace(/[^a-zA-Z0-9]+/g, '_')}.png`;
      await page.screenshot({ path: file, fullPage: true });
    }
    views.push(current);
    current = newView(name);
  };

  for (const { route, steps = [] } of ROUTES) {
    // Deep routes are reached the way a user reaches them, from the app by the router: the build
    // refers to its assets relatively (vite `base: './'`), so a cold load of /a/b finds no script.
    current = newView('(home)');
    await page.goto(webUrl + '/', { waitUntil: 'domcontentloaded' });
    await settle(page);
    current = newView(route);
    if (route !== '/') {
      await page.evaluate((r) => {
        window.history.pushState({}, '', r);
        window.dispatchEvent(new PopStateEvent('popstate'));
      }, route);
    }
    await settle(page);
    const shown = await page.$eval('#root', (e) => e.innerText.trim().length).catch(() => 0);
    if (!shown) current.failures.push('the page shows nothing');
    await finish(route);
    for (const step of steps) {
      const name = `${route} → ${stepLabel(step)}`;
      current = newView(name);
      const done = await runStep(page, step);
      if (!done) current.failures.push(`the page offers no ${stepLabel(step)}`);
      await settle(page);
      await finish(name);
    }
    for (const t of await tabs(page)) {
      if (t.disabled) continue;
      const name = `${route} [${t.label}]`;
      current = newView(name);
      const handles = await page.$$('[role="tab"]');
      if (!handles[t.i]) continue;
      await handles[t.i].click();
      await settle(page);
      await finish(name);
    }
  }
  await browser.close();

  const bad = views.filter(
    (v) => v.failures.length || v.http_errors.length || v.page_errors.length || v.alerts.length,
  );
  fs.writeFileSync(reportPath, JSON.stringify({ views }, null, 2));
  for (const v of views) {
    const problems = [
      ...v.failures.map((f) => `skill failed: ${f}`),
      ...v.http_errors.map((f) => `http: ${f}`),
      ...v.page_errors.map((f) => `uncaught: ${f}`),
      ...v.alerts.map((f) => `alert: ${f.replace(/\s+/g, ' ').slice(0, 160)}`),
    ];
    const calls = Object.keys(v.skills).join(', ') || '-';
    console.log(`${problems.length ? 'FAIL' : 'ok  '} ${v.view}   (skills: ${calls})`);
    const counted = new Map();
    for (const p of problems) counted.set(p, (counted.get(p) || 0) + 1);
    for (const [p, n] of counted) console.log(`       ${p}${n > 1 ? ` (×${n})` : ''}`);
    for (const note of new Set(v.notes)) console.log(`       note: ${note}`);
  }
  console.log(`\n${views.length - bad.length} of ${views.length} views clean; report: ${reportPath}`);
  process.exit(bad.length ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
