// Cedar's owner console in a real browser: Debian's chromium driven by playwright-core.
//
// Starts a loopback SMTP server and a fresh Cedar (SQLite, the demo school, its worker), then
// signs in as the owner, approves an enrolment choosing the second option, marks a task done,
// retries an email that bounced, switches to French and looks at the page on a phone. Each
// step is checked through the JSON API too; screenshots of every page go to
// target/console-screenshots/. Exits non-zero on the first failure.
//
//   CEDAR_BIN=target/debug/cedar node tests/browser/console.mjs

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = path.resolve(root, process.env.CEDAR_BIN ?? "target/debug/cedar");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = path.join(root, "target/console-screenshots");
const PASSWORD = "cedar-demo-2026";
const OWNER = "admin@demo.cedarheights.ca";

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// A minimal SMTP server (RFC 5321 subset lettre uses): it refuses recipients containing
// "bounce" with a permanent 550 until `accept` is set, and keeps what it accepted.
function smtpServer() {
  const state = { accept: false, delivered: [] };
  const server = net.createServer((socket) => {
    let buffer = "";
    let inData = false;
    let recipients = [];
    socket.write("220 loopback ESMTP test\r\n");
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      for (;;) {
        if (inData) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end === -1) return;
          state.delivered.push({ to: recipients, data: buffer.slice(0, end) });
          buffer = buffer.slice(end + 5);
          inData = false;
          socket.write("250 2.0.0 queued\r\n");
          continue;
        }
        const line = buffer.indexOf("\r\n");
        if (line === -1) return;
        const command = buffer.slice(0, line);
        buffer = buffer.slice(line + 2);
        const verb = command.slice(0, 4).toUpperCase();
        if (verb === "EHLO" || verb === "HELO") socket.write("250-loopback\r\n250 8BITMIME\r\n");
        else if (verb === "MAIL") { recipients = []; socket.write("250 2.1.0 ok\r\n"); }
        else if (verb === "RCPT") {
          if (!state.accept && /bounce/i.test(command)) socket.write("550 5.1.1 mailbox unavailable\r\n");
          else { recipients.push(command); socket.write("250 2.1.5 ok\r\n"); }
        } else if (verb === "DATA") { inData = true; socket.write("354 go ahead\r\n"); }
        else if (verb === "RSET" || verb === "NOOP") socket.write("250 ok\r\n");
        else if (verb === "QUIT") { socket.write("221 bye\r\n"); socket.end(); }
        else socket.write("502 5.5.1 not implemented\r\n");
      }
    });
    socket.on("error", () => {});
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, state, port: server.address().port })));
}

async function waitFor(what, probe, timeoutMs = 20000) {
  const started = Date.now();
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "cedar-console-"));
  const smtp = await smtpServer();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = {
    ...process.env,
    CEDAR_DATA_DIR: dataDir,
    CEDAR_RATE_LIMIT_PER_MINUTE: "0",
    CEDAR_EMAIL_TRANSPORT: "smtp",
    CEDAR_SMTP_URL: `smtp://127.0.0.1:${smtp.port}`,
    CEDAR_PUBLIC_URL: base,
    CEDAR_LOG_LEVEL: "warn",
  };
  delete env.DATABASE_URL;
  const demo = spawnSync(bin, ["demo"], { env, encoding: "utf8" });
  check(demo.status === 0, `cedar demo failed: ${demo.stderr}`);
  const cedar = spawn(bin, ["serve", "--addr", `127.0.0.1:${port}`], { env, stdio: ["ignore", "inherit", "inherit"] });
  const errors = [];
  let browser;
  try {
    await waitFor("cedar to be ready", async () => (await fetch(`${base}/ready`).catch(() => null))?.ok);

    // The JSON API, to set the scene and to check what the browser did.
    const grant = await (await fetch(`${base}/auth/v1/token?grant_type=password`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: OWNER, password: PASSWORD }),
    })).json();
    const api = async (method, url, body) => {
      const response = await fetch(`${base}${url}`, {
        method, headers: { authorization: `Bearer ${grant.access_token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: response.status, body: await response.json().catch(() => null) };
    };
    const task = await api("POST", "/v1/tasks", { title: "Call the Patel family about March", due_on: "2026-01-05" });
    check(task.status === 201, `task created (${task.status})`);
    const signup = await fetch(`${base}/auth/v1/signup`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "bounce-parent@example.com", password: "a-long-parent-password" }),
    });
    check(signup.ok, `parent signed up (${signup.status})`);
    const dead = await waitFor("the confirmation email to bounce", async () =>
      (await api("GET", "/v1/outbox?status=dead")).body?.items?.[0]);
    await waitFor("the demo's enrolment reviews", async () => (await api("GET", "/v1/reviews")).body?.items?.length >= 2);

    browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-CA" });
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    page.on("pageerror", (e) => errors.push(String(e)));

    // Sign in: the console sends a stranger to the sign-in page, then back.
    await page.goto(`${base}/console`);
    check(page.url().startsWith(`${base}/console/sign-in`), `redirected to sign in, at ${page.url()}`);
    await page.screenshot({ path: path.join(shots, "1-sign-in.png"), fullPage: true });
    await page.fill("#email", OWNER);
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(`${base}/console`), page.click("button[type=submit].primary")]);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "cedar_session");
    check(session && session.httpOnly && session.sameSite === "Lax", "the session cookie is HttpOnly, SameSite=Lax");
    await page.screenshot({ path: path.join(shots, "2-morning.png"), fullPage: true });
    await checkLabels(page, "morning");

    // The review inbox: open the first enrolment, choose the second option, approve.
    const link = page.locator("#inbox a[data-nav]").first();
    await page.keyboard.press("j");
    check(await link.evaluate((a) => a === document.activeElement), "j focuses the first inbox item");
    const before = (await api("GET", "/v1/reviews?workflow=enrollment")).body.items
      .find((r) => r.context.options.length >= 2);
    check(before, "an enrolment review with two options or more");
    const reviewId = before.id;
    await Promise.all([page.waitForURL(/\/console\/reviews\//), page.click(`a[href="/console/reviews/${reviewId}"]`)]);
    await page.screenshot({ path: path.join(shots, "3-review-enrollment.png"), fullPage: true });
    await checkLabels(page, "review");
    await page.check('input[name=option][value="1"]');
    await Promise.all([page.waitForURL(/done=approved/), page.click("#approve-form button[type=submit]")]);
    check((await page.textContent(".flash")).includes("Approved"), "the page says approved");
    const after = (await api("GET", `/v1/reviews/${reviewId}`)).body;
    check(after.status === "approved" && after.edits.option === 1, `approved with option 1: ${JSON.stringify(after.edits)}`);
    const chosen = before.context.options[1];
    const run = await waitFor("the enrolment run to finish", async () => {
      const r = (await api("GET", `/v1/workflow-runs/${before.run_id}`)).body;
      return r && ["succeeded", "failed", "cancelled"].includes(r.status) ? r : null;
    });
    check(run.status === "succeeded", `the run succeeded (${run.status})`);
    const until = new Date(Date.parse(chosen.first_lesson) + 60000).toISOString();
    const lessons = await api("GET", `/v1/lessons?teacher_id=${chosen.teacher_id}&from=${encodeURIComponent(chosen.first_lesson)}&to=${encodeURIComponent(until)}`);
    check(lessons.body.items.length === 1, `the second option's lesson is booked: ${JSON.stringify(lessons.body)}`);

    // Tasks: mark the owner's task done.
    const title = "Call the Patel family about March";
    await Promise.all([page.waitForURL(/done=task/), page.click(`button[aria-label="Done: ${title}"]`)]);
    check(!(await page.locator("#tasks").textContent()).includes(title), "the task left the list");
    check((await api("GET", `/v1/tasks/${task.body.id}`)).body.status === "done", "the API says the task is done");

    // Health: the bounced email, retried once the mailbox accepts.
    await page.locator("#health").scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, "4-health.png"), fullPage: true });
    check((await page.locator("#health").textContent()).includes(dead.subject), "the dead email is listed");
    smtp.state.accept = true;
    await Promise.all([page.waitForURL(/done=retry/), page.click(`button[aria-label="Retry: ${dead.subject}"]`)]);
    await waitFor("the retried email to be sent", async () =>
      (await api("GET", `/v1/outbox/${dead.id}`)).body?.status === "sent");
    check(smtp.state.delivered.some((m) => m.to.join(" ").includes("bounce-parent@example.com")), "the SMTP server got it");

    // French, by the user's choice (kept in their profile).
    await Promise.all([page.waitForURL(`${base}/console`), page.click("button[lang=fr]")]);
    check((await page.textContent("#inbox-title")).includes("En attente de vous"), "labels in French");
    check((await page.getAttribute("html", "lang")) === "fr", "html lang=fr");
    await page.screenshot({ path: path.join(shots, "5-morning-fr.png"), fullPage: true });
    const profile = await api("GET", "/auth/v1/user");
    check(profile.body.user_metadata.locale === "fr", "the choice is saved in user_metadata");

    // A phone: nothing wider than the screen.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await phone.addCookies(await context.cookies());
    const small = await phone.newPage();
    await small.goto(`${base}/console`);
    const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
    await small.screenshot({ path: path.join(shots, "6-morning-phone.png"), fullPage: true });

    // A form from another site is refused (CSRF).
    const forged = await fetch(`${base}/console/tasks/${task.body.id}/done`, {
      method: "POST", redirect: "manual",
      headers: { "content-type": "application/x-www-form-urlencoded", cookie: `cedar_session=${session.value}` },
      body: "csrf=guess",
    });
    check(forged.status === 403, `a forged form gets 403 (${forged.status})`);

    check(errors.length === 0, `no errors in the browser console: ${errors.join(" | ")}`);
    console.log(`console browser test passed; screenshots in ${path.relative(root, shots)}/`);
  } finally {
    await browser?.close();
    cedar.kill("SIGTERM");
    smtp.server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

// Every visible form control has a label, and every page has one h1 and a main landmark.
async function checkLabels(page, name) {
  const unlabeled = await page.evaluate(() =>
    Array.from(document.querySelectorAll("input, select, textarea"))
      .filter((el) => el.type !== "hidden")
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
      .map((el) => el.outerHTML.slice(0, 80)));
  check(unlabeled.length === 0, `${name}: every control is labelled: ${unlabeled.join(", ")}`);
  check((await page.locator("h1").count()) === 1, `${name}: one h1`);
  check((await page.locator("main").count()) === 1, `${name}: a main landmark`);
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
