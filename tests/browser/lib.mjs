// Shared pieces of the browser harness scripts (authorize.mjs, smart-launch.mjs).
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

export const PAGE_TIMEOUT_MS = 20_000;
export const SCRIPT_DEADLINE_MS = 55_000;

let printed = false;

/** Prints exactly one JSON line on stdout; later calls are ignored. */
export function emit(value) {
    if (printed) return;
    printed = true;
    process.stdout.write(JSON.stringify(value) + "\n");
}

/** Prints `{"error": ...}` and exits 1. */
export function fail(message) {
    emit({ error: String(message) });
    process.exit(1);
}

/** Parses argv[2] as the JSON input, checking the required fields are present. */
export function readInput(required) {
    let input;
    try {
        input = JSON.parse(process.argv[2] ?? "");
    } catch (e) {
        fail(`argv[2] must be one JSON object: ${e.message}`);
    }
    if (input === null || typeof input !== "object" || Array.isArray(input)) {
        fail("argv[2] must be one JSON object");
    }
    for (const field of required) {
        if (input[field] === undefined || input[field] === null) fail(`input field "${field}" is missing`);
    }
    return input;
}

/**
 * Kills the script if it is still running after SCRIPT_DEADLINE_MS, so it ends within 60 s
 * even if the server hangs. Playwright kills the browser it launched when the process exits.
 */
export function startWatchdog(what) {
    const timer = setTimeout(() => fail(`${what}: gave up after ${SCRIPT_DEADLINE_MS / 1000} s`), SCRIPT_DEADLINE_MS);
    timer.unref();
    for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => fail(`${what}: killed by ${signal}`));
}

/** Any rejection not otherwise handled ends the script with an error line. */
export function failOnStrayErrors() {
    process.on("unhandledRejection", (e) => fail(e?.stack || e));
    process.on("uncaughtException", (e) => fail(e?.stack || e));
}

export async function launchChromium(input) {
    const executablePath = input.chromium || process.env.PDEX_CHROMIUM || "/usr/bin/chromium";
    return chromium.launch({
        executablePath,
        headless: true,
        args: ["--no-sandbox"],
        timeout: PAGE_TIMEOUT_MS,
    });
}

export async function newPage(browser) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(PAGE_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(PAGE_TIMEOUT_MS);
    const page = await context.newPage();
    // Every response to a document navigation of the main frame, redirects included.
    const navigations = [];
    page.on("response", (response) => {
        const request = response.request();
        if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
            navigations.push({ method: request.method(), url: response.url(), status: response.status() });
        }
    });
    return { context, page, navigations };
}

export function screenshotter(page, dir) {
    mkdirSync(dir, { recursive: true });
    return (name) => page.screenshot({ path: `${dir}/${name}`, fullPage: true, timeout: PAGE_TIMEOUT_MS });
}

/** Closes the browser, but never waits more than a few seconds for it. */
export async function closeQuietly(browser) {
    if (!browser) return;
    await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 5_000).unref())]);
}

/**
 * Resolves with the final (non-redirect) response of the next main-frame document
 * navigation, after running `action` (e.g. a click that submits a form).
 */
export async function navigateBy(page, action) {
    const final = page.waitForResponse(
        (r) =>
            r.request().isNavigationRequest() &&
            r.request().frame() === page.mainFrame() &&
            (r.status() < 300 || r.status() > 399),
        { timeout: PAGE_TIMEOUT_MS },
    );
    final.catch(() => {});
    let response;
    try {
        await action();
        response = await final;
    } catch (e) {
        throw new Error(`no page came back within ${PAGE_TIMEOUT_MS / 1000} s (browser at ${page.url()}): ${e.message.split("\n")[0]}`);
    }
    // the response can arrive before its document replaces the current one
    await page.waitForURL(response.url(), { waitUntil: "load", timeout: PAGE_TIMEOUT_MS });
    return response;
}

/** The sign-in form's submit button. */
export function signinSubmit(page) {
    return page
        .locator('form:has(input[name="password"])')
        .first()
        .locator('button[type="submit"], input[type="submit"], button:not([type])')
        .first();
}

/** Fills and submits the sign-in form; resolves with the response to the submission. */
export async function signIn(page, username, password) {
    await page.locator('input[name="username"]').first().fill(String(username));
    await page.locator('input[name="password"]').first().fill(String(password));
    return navigateBy(page, () => signinSubmit(page).click());
}

export async function hasSigninForm(page) {
    return (
        (await page.locator('form input[name="username"]').count()) > 0 &&
        (await page.locator('form input[name="password"]').count()) > 0
    );
}

/** Waits for the authorization page (the `sensitive` radio group); errors with the page's text if absent. */
export async function expectAuthorizationPage(page, afterWhat) {
    try {
        await page.locator('input[name="sensitive"]').first().waitFor({ state: "attached", timeout: PAGE_TIMEOUT_MS });
    } catch {
        const text = await page.evaluate(() => document.body?.innerText ?? "").catch(() => "");
        throw new Error(`no authorization page (input name="sensitive") after ${afterWhat}; page at ${page.url()} says: ${text.slice(0, 500)}`);
    }
}

/** Names (or ids, or types) of visible form controls without an associated <label>. */
export function unlabelledInputs(page) {
    return page.evaluate(() => {
        const skip = new Set(["hidden", "submit", "button", "reset", "image"]);
        const out = [];
        for (const el of document.querySelectorAll("input, select, textarea")) {
            if (el.tagName === "INPUT" && skip.has((el.getAttribute("type") || "text").toLowerCase())) continue;
            const style = getComputedStyle(el);
            const visible = el.getClientRects().length > 0 && style.visibility !== "hidden" && style.display !== "none";
            if (!visible) continue;
            if (el.labels && el.labels.length > 0) continue;
            const id = el.name || el.id || el.type;
            out.push(el.type === "radio" && el.value ? `${id}=${el.value}` : id);
        }
        return out;
    });
}

export async function cookieSummary(context) {
    return (await context.cookies()).map((c) => ({
        name: c.name,
        httpOnly: c.httpOnly,
        secure: c.secure,
        sameSite: c.sameSite,
    }));
}
