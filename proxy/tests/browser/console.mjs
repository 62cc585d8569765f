// Drives the operators' console in headless Chromium for proxy/tests/api/console.rs,
// which starts the proxy, makes the tokens and a dead webhook run, then runs this script.
// Saves a screenshot of every page in $SCREENSHOTS; prints "console ok" when every check
// held, else throws (exit status 1) naming the check.
import { chromium } from "playwright-core";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const base = env("CONSOLE_URL");
const shots = env("SCREENSHOTS");
const deadRun = env("DEAD_RUN_ID");
const submission = env("SUBMISSION_ID");

function check(holds, what) {
  if (!holds) throw new Error(`check failed: ${what}`);
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

async function login(browser, token, first) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/ui`);
  check(page.url().startsWith(`${base}/ui/login`), `a stranger lands on the login page, not ${page.url()}`);
  if (first) await shot(page, "01-login");
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForURL(`${base}/ui`);
  return page;
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  // Root in a container has no user namespace for the sandbox.
  args: ["--no-sandbox"],
});
try {
  // A read token sees everything and no button.
  const reader = await login(browser, env("READ_TOKEN"), true);
  check((await reader.locator("a.bad").count()) > 0, "the Overview shows the dead run");
  await shot(reader, "02-overview-read");
  await reader.goto(`${base}/ui/dead`);
  check((await reader.getByText("Retry all").count()) === 0, "no retry button for read");
  await reader.goto(`${base}/ui/runs/${deadRun}`);
  check((await reader.locator('form[action$="/retry"]').count()) === 0, "no Retry on the run for read");
  await shot(reader, "03-run-read");

  // An admin token: the pages, then "retry all" on the dead group.
  const admin = await login(browser, env("ADMIN_TOKEN"), false);
  // The live refresh fetches the figures while the tab is visible.
  await admin.waitForResponse((r) => r.url().endsWith("/ui/live") && r.ok(), { timeout: 10000 });
  await shot(admin, "04-overview");
  await admin.click("nav >> text=Forms");
  check((await admin.locator("a.bad").count()) > 0, "Forms shows the binding's dead run");
  await shot(admin, "05-forms");
  await admin.click("nav >> text=Dead letters");
  const retryAll = admin.getByText("Retry all 1");
  check((await retryAll.count()) === 1, "Dead letters offers to retry the group of one");
  await shot(admin, "06-dead-letters");
  await retryAll.click();
  check((await admin.getByText("Retry 1 dead run?").count()) === 1, "the confirmation says how many");
  check((await admin.getByText("postsub runs retry-dead --binding").count()) === 1, "and the CLI that does it");
  await shot(admin, "07-confirm");
  await admin.click("button:has-text('Retry 1 run')");
  check((await admin.getByText("Retried 1 run", { exact: true }).count()) === 1, "the group was retried");
  await shot(admin, "08-retried");

  // The Runs filter by status and submission id finds it, succeeded.
  await admin.goto(`${base}/ui/runs`);
  await admin.selectOption("select[name=status]", "succeeded");
  await admin.fill("input[name=submission]", submission);
  const deadline = Date.now() + 20000;
  for (;;) {
    await admin.click("button:has-text('Filter')");
    if ((await admin.locator(`a[href="/ui/runs/${deadRun}"]`).count()) > 0) break;
    check(Date.now() < deadline, "the retried run succeeds within 20 s");
    await admin.waitForTimeout(250);
  }
  await shot(admin, "09-runs-filtered");
  await admin.click(`a[href="/ui/runs/${deadRun}"]`);
  check((await admin.locator(".status.succeeded").count()) > 0, "the run page says succeeded");
  await shot(admin, "10-run");
  await admin.goto(`${base}/ui/submissions/${submission}`);
  await shot(admin, "11-submission");
  await admin.click("nav >> text=Bindings");
  check((await admin.getByText("whsec_********").count()) > 0, "the webhook secret is masked");
  await shot(admin, "12-bindings");
  await admin.click("nav >> text=Audit");
  check((await admin.getByText("run.retry_group").count()) > 0, "the audit log has the retry");
  await shot(admin, "13-audit");
  console.log("console ok");
} finally {
  await browser.close();
}
