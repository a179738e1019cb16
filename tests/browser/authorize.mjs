// Drives pdex's sign-in and authorization pages in headless Chromium, from the authorize URL
// to the redirect back to the client, and reports what it saw as one JSON line.
// Input and output: see README.md.
import {
    closeQuietly,
    cookieSummary,
    emit,
    expectAuthorizationPage,
    fail,
    failOnStrayErrors,
    hasSigninForm,
    launchChromium,
    navigateBy,
    newPage,
    PAGE_TIMEOUT_MS,
    readInput,
    screenshotter,
    signIn,
    startWatchdog,
    unlabelledInputs,
} from "./lib.mjs";

startWatchdog("authorize.mjs");
failOnStrayErrors();

const input = readInput(["authorizeUrl", "username", "password", "redirectPrefix", "screenshotDir"]);
const sensitive = input.sensitive ?? "withhold";
const decision = input.decision ?? "approve";
if (!["share", "withhold"].includes(sensitive)) fail(`sensitive must be "share" or "withhold", not ${JSON.stringify(sensitive)}`);
if (!["approve", "deny"].includes(decision)) fail(`decision must be "approve" or "deny", not ${JSON.stringify(decision)}`);

let browser;
try {
    browser = await launchChromium(input);
    const { context, page, navigations } = await newPage(browser);
    const shot = screenshotter(page, input.screenshotDir);

    // The client's redirect URI is never loaded: record the URL and answer a stub page.
    let resolveCallback;
    const callbackSeen = new Promise((resolve) => (resolveCallback = resolve));
    await page.route(
        (url) => url.href.startsWith(input.redirectPrefix),
        async (route) => {
            resolveCallback(route.request().url());
            await route.fulfill({
                status: 200,
                contentType: "text/html; charset=utf-8",
                body: "<!doctype html><html><head><title>Callback</title></head><body><p>Redirect received by the test client.</p></body></html>",
            });
        },
    );

    const first = await navigateBy(page, () => page.goto(input.authorizeUrl, { waitUntil: "commit" }));
    const signinStatus = first.status();
    if (!(await hasSigninForm(page))) {
        const text = await page.evaluate(() => document.body?.innerText ?? "");
        throw new Error(`no sign-in form at the authorize URL (status ${signinStatus}): ${text.slice(0, 500)}`);
    }
    await shot("signin.png");
    const unlabelled = new Set(await unlabelledInputs(page));

    let failedSigninStatus = null;
    let failedSigninHasForm = null;
    if (input.wrongPasswordFirst) {
        const failed = await signIn(page, input.username, `${input.password}-wrong`);
        failedSigninStatus = failed.status();
        failedSigninHasForm = await hasSigninForm(page);
        await shot("signin-failed.png");
        if (!failedSigninHasForm) throw new Error(`no sign-in form after a wrong password (status ${failedSigninStatus})`);
    }

    await signIn(page, input.username, input.password);
    await expectAuthorizationPage(page, "signing in");

    const withholdPreselected = await page.locator('input[name="sensitive"][value="withhold"]').isChecked();
    for (const name of await unlabelledInputs(page)) unlabelled.add(name);
    const authorizePageText = await page.evaluate(() => document.body.innerText);
    await shot("authorize.png");
    const desktop = page.viewportSize();
    await page.setViewportSize({ width: 390, height: 844 });
    await shot("authorize-phone.png");
    await page.setViewportSize(desktop);

    await page.locator(`input[name="sensitive"][value="${sensitive}"]`).check();
    await page.locator(`[name="decision"][value="${decision}"]`).click();
    const callback = await Promise.race([
        callbackSeen,
        new Promise((_, reject) =>
            setTimeout(
                () => reject(new Error(`no redirect to ${input.redirectPrefix} within ${PAGE_TIMEOUT_MS / 1000} s of "${decision}"; now at ${page.url()}`)),
                PAGE_TIMEOUT_MS,
            ).unref(),
        ),
    ]);
    await page.waitForLoadState("load");
    await shot("callback.png");

    emit({
        callback,
        signinStatus,
        failedSigninStatus,
        failedSigninHasForm,
        withholdPreselected,
        unlabelledInputs: [...unlabelled],
        authorizePageText,
        cookies: await cookieSummary(context),
        navigations,
    });
} catch (e) {
    emit({ error: e?.message ?? String(e) });
    process.exitCode = 1;
} finally {
    await closeQuietly(browser);
}
process.exit(process.exitCode ?? 0);
