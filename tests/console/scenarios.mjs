// The console's end-to-end scenarios, in Debian's headless Chromium driven by Playwright.
// Run by tests/console.rs against a real reeve with embedded runners, which it prepares
// (projects, pipelines, tokens, a 300-job build) and passes in the environment:
//   REEVE_URL, REEVE_ADMIN, REEVE_READER (a read-only api token), REEVE_BIG_BUILD (project/id),
//   SHOTS (where each scenario saves a screenshot), PLAYWRIGHT_CORE (the installed module).
// Prints one line per scenario and "N passed, M failed"; exits 1 if any failed.

const { chromium } = await import(process.env.PLAYWRIGHT_CORE);

const base = process.env.REEVE_URL;
const admin = process.env.REEVE_ADMIN;
const reader = process.env.REEVE_READER;
const shots = process.env.SHOTS;
const [bigProject, bigBuild] = (process.env.REEVE_BIG_BUILD || '/').split('/');

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 860 } });
const page = await context.newPage();
page.setDefaultTimeout(20000);

// Any script error or CSP violation fails the run: the console must work under its own CSP.
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console error: ${m.text()}`);
});
// Every request the console makes to the API carries Reeve-Plane: web, and no token in a URL.
const requests = [];
page.on('request', (r) => {
  const url = new URL(r.url());
  if (url.pathname.startsWith('/api/')) requests.push({ url: r.url(), plane: r.headers()['reeve-plane'] });
});

let passed = 0;
let failed = 0;
async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    if (problems.length) throw new Error(problems.splice(0).join('; '));
    passed++;
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}: ${e && e.stack ? e.stack : e}`);
  }
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: false }).catch(() => {});
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function signIn(token) {
  await page.goto(`${base}/`);
  await page.fill('#token', token);
  await page.click('form.signin button[type=submit]');
  await page.waitForSelector('header.top nav');
}

async function confirmDialog(fields = {}) {
  const dialog = page.locator('dialog.ask[open]');
  await dialog.waitFor();
  for (const [name, value] of Object.entries(fields)) {
    const field = dialog.locator(`[name="${name}"]`);
    if ((await field.evaluate((el) => el.tagName)) === 'SELECT') await field.selectOption(value);
    else await field.fill(value);
  }
  await dialog.locator('button[type=submit]').click();
}

/** Polls a job node's state in the graph until `want` is seen; returns every state seen. */
async function watchStates(name, want, timeout = 30000) {
  const seen = [];
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const state = await page.locator(`g.job[data-name="${name}"]`).first().getAttribute('data-state').catch(() => null);
    if (state && seen[seen.length - 1] !== state) seen.push(state);
    if (state === want) return seen;
    await page.waitForTimeout(50);
  }
  throw new Error(`${name} never became ${want}; seen ${seen.join(' → ')}`);
}

const watchRow = (uri) => page.locator(`tr.watch[data-uri="${uri}"]`);
const uri = 'viking://res/console';
let buildUrl = null;

await scenario('01-sign-in', async () => {
  await page.goto(`${base}/`);
  const csp = (await page.request.get(`${base}/`)).headers()['content-security-policy'] || '';
  assert(csp.includes("frame-ancestors 'none'") && csp.includes("script-src 'self'"), `CSP: ${csp}`);
  // A wrong token is refused in words, and nothing is stored.
  await page.fill('#token', 'not-a-token');
  await page.click('form.signin button[type=submit]');
  await page.locator('form.signin .error:not([hidden])').waitFor();
  assert(!(await page.evaluate(() => sessionStorage.getItem('reeve.token'))), 'a refused token is not kept');
  await page.fill('#token', admin);
  await page.click('form.signin button[type=submit]');
  await page.waitForSelector('header.top nav a[data-nav="audit"]');
  assert(!page.url().includes(admin), 'the token is never in the URL');
  await page.locator('.live-dot.up').waitFor();
});

await scenario('02-create-watch', async () => {
  await page.click('#new-watch');
  await confirmDialog({ project: 'docs', source: 'https://git.example.com/console', to_uri: uri, interval: '60', reason: 'made in the console' });
  await watchRow(uri).waitFor();
  assert((await watchRow(uri).locator('td.state').textContent()).includes('active'), 'the new watch is active');
});

await scenario('03-pause-watch', async () => {
  await watchRow(uri).locator('button.act-pause').click();
  await confirmDialog({ reason: 'maintenance window' });
  await page.waitForFunction((u) => {
    const row = document.querySelector(`tr.watch[data-uri="${u}"]`);
    return row && row.querySelector('td.state').textContent.includes('paused') && row.textContent.includes('maintenance window');
  }, uri);
});

await scenario('04-trigger-and-open-build', async () => {
  await watchRow(uri).locator('button.act-trigger').click();
  // The fire's build appears in the row from the event stream: no reload.
  const link = watchRow(uri).locator('a.build-link');
  await link.waitFor();
  await link.click();
  await page.locator('svg.graph g.job').first().waitFor();
  buildUrl = page.url();
  assert(/#\/builds\/docs\/[0-9a-f-]{36}/.test(buildUrl), `build page ${buildUrl}`);
});

await scenario('05-jobs-go-live', async () => {
  // `build` waits for `prepare` (queued), then runs, then finishes: all seen without a reload.
  const states = await watchStates('build', 'finished', 40000);
  for (const want of ['queued', 'running', 'finished']) {
    assert(states.includes(want), `build went ${states.join(' → ')}, never ${want}`);
  }
});

await scenario('06-follow-log', async () => {
  // A fresh build so the log is caught while it is still being written.
  await page.goto(`${base}/#/builds/docs`);
  await page.click('#trigger-build');
  await confirmDialog();
  await page.locator('svg.graph g.job[data-name="build"]').waitFor();
  await watchStates('build', 'running', 30000);
  await page.locator('g.job[data-name="build"]').click();
  const log = page.locator('#job-log');
  await page.waitForFunction(() => document.querySelector('#job-log').textContent.includes('line 1'));
  const early = await log.textContent();
  assert(!early.includes('built'), 'the log was caught before the job ended');
  await page.waitForFunction(() => {
    const el = document.querySelector('#job-log');
    return el.textContent.includes('built') && el.dataset.done === 'true';
  }, null, { timeout: 30000 });
  const text = await log.textContent();
  assert(/line 1[\s\S]*line 5[\s\S]*built/.test(text), `log: ${text}`);
});

await scenario('07-restart-failing-job', async () => {
  await page.goto(buildUrl);
  await watchStates('check', 'failure', 40000);
  await page.locator('g.job[data-name="check"]').click();
  await page.locator('.job-actions button.act-restart').click();
  await confirmDialog();
  await page.locator('g.job[data-name="check.1"]').waitFor();
  assert(await page.locator('g.job.superseded[data-name="check"]').count() === 1, 'the original is superseded (dimmed)');
  assert(await page.locator('svg.graph path.clone-edge').count() >= 1, 'the clone chain is drawn');
  // Restarting the superseded original is refused, and the dialog says why.
  await page.locator('g.job[data-name="check"]').click();
  await page.locator('.job-actions button.act-restart').click();
  const dialog = page.locator('dialog.ask[open]');
  await dialog.locator('button[type=submit]').click();
  await dialog.locator('.dialog-error:not([hidden])').waitFor();
  const refusal = await dialog.locator('.dialog-error').textContent();
  assert(/superseded/.test(refusal) && /job_superseded/.test(refusal), `refusal text: ${refusal}`);
  await dialog.locator('button[type=button]').click();
  await watchStates('check.1', 'failure', 40000);
  await page.locator('g.job[data-name="check.1"]').click();
});

await scenario('08-abort-running-job', async () => {
  await page.goto(`${base}/#/builds/slow`);
  await page.click('#trigger-build');
  await confirmDialog();
  await page.locator('g.job[data-name="forever"]').waitFor();
  await watchStates('forever', 'running', 30000);
  await page.locator('g.job[data-name="forever"]').click();
  await page.locator('.job-actions button.act-abort').click();
  await confirmDialog();
  await watchStates('forever', 'killed', 30000);
});

await scenario('09-audit-plane-web', async () => {
  await page.click('nav a[data-nav="audit"]');
  await page.locator('#head-anchor').waitFor();
  const anchor = await page.locator('#head-anchor').textContent();
  assert(/^\d+:[0-9a-f]{64}$/.test(anchor), `anchor ${anchor}`);
  await page.selectOption('#audit-plane', 'web');
  await page.click('form.audit-filters button[type=submit]');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('table.audit tbody tr[data-seq]')];
    return rows.length > 0 && rows.every((r) => r.dataset.plane === 'web');
  });
  const planes = await page.locator('table.audit tbody tr[data-seq]').evaluateAll((rows) => rows.map((r) => r.dataset.plane));
  assert(planes.every((p) => p === 'web'), `planes ${planes}`);
  const ops = await page.locator('table.audit tbody tr[data-seq] details summary').allTextContents();
  for (const op of ['create_watch', 'update_watch', 'trigger_watch', 'trigger_build', 'restart_job', 'abort_job']) {
    assert(ops.includes(op), `no ${op} on plane web: ${ops}`);
  }
});

await scenario('10-big-graph', async () => {
  const started = Date.now();
  await page.goto(`${base}/#/builds/${bigProject}/${bigBuild}`);
  await page.waitForFunction(() => document.querySelectorAll('svg.graph g.job').length >= 300);
  const took = Date.now() - started;
  const drawn = Number(await page.locator('.graph-wrap').getAttribute('data-render-ms'));
  assert(took < 1000, `the 300-job graph took ${took} ms to show`);
  assert(drawn < 1000, `drawing it took ${drawn} ms`);
});

await scenario('11-watches-page', async () => {
  await page.goto(`${base}/#/watches`);
  await watchRow(uri).waitFor();
  await page.locator('tr.watch.failing').first().waitFor();
  await page.waitForTimeout(300);
});

await scenario('12-read-only-token', async () => {
  await page.click('button.signout');
  await page.locator('#token').waitFor();
  assert(!(await page.evaluate(() => sessionStorage.getItem('reeve.token'))), 'signing out forgets the token');
  await signIn(reader);
  await watchRow(uri).waitFor();
  assert(await page.locator('main button:not(.expand):not(.link)').count() === 0, 'no action buttons on the watches page');
  assert(await page.locator('nav a[data-nav="audit"]').count() === 0, 'no audit trail for a non-admin token');
  await page.goto(buildUrl);
  await page.locator('svg.graph g.job').first().waitFor();
  await page.locator('g.job[data-name="check"]').click();
  await page.locator('.job-panel .facts').waitFor();
  assert(await page.locator('main button').count() === 0, 'no action buttons on the build page');
  await page.goto(`${base}/#/builds/docs`);
  await page.locator('table.builds tbody tr').first().waitFor();
  assert(await page.locator('#trigger-build').count() === 0, 'no trigger button');
});

const unlabelled = requests.filter((r) => r.plane !== 'web');
const leaked = requests.filter((r) => r.url.includes(admin) || r.url.includes(reader));
if (unlabelled.length || leaked.length) {
  failed++;
  console.log(`not ok - 13-requests: ${unlabelled.length} without Reeve-Plane: web, ${leaked.length} with a token in the URL`);
} else {
  passed++;
  console.log(`ok - 13-requests (${requests.length} API requests, all on plane web, no token in a URL)`);
}

await browser.close();
console.log(`console: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
