// Drives pdex's account page in headless Chromium: opens it, signs in, revokes the
// authorization of the app named `revokeApp` with its button, and reports what it saw as one
// JSON line. Input and output: see README.md.
import {
    closeQuietly,
    emit,
    fail,
    failOnStrayErrors,
    hasSigninForm,
    launchChromium,
    navigateBy,
    newPage,
    readInput,
    screenshotter,
    signIn,
    startWatchdog,
    unlabelledInputs,
} from "./lib.mjs";

startWatchdog("account.mjs");
failOnStrayErrors();

const input = readInput(["accountUrl", "username", "password", "revokeApp", "screenshotDir"]);

let browser;
try {
    browser = await launchChromium(input);
    const { page } = await newPage(browser);
    const shot = screenshotter(page, input.screenshotDir);

    await navigateBy(page, () => page.goto(input.accountUrl, { waitUntil: "commit" }));
    if (!(await hasSigninForm(page))) throw new Error("no sign-in form on the account page");
    await shot("account-signin.png");
    const signedIn = await signIn(page, input.username, input.password);
    const signedInStatus = signedIn.status();
    // the response can arrive before its page replaces the sign-in page: wait for the list
    await page.locator('button[name="revoke"]').first().waitFor({ state: "visible" });
    const unlabelled = await unlabelledInputs(page);
    const textBefore = await page.evaluate(() => document.body.innerText);
    await shot("account.png");

    // the revoke button of the named app's section (keyboard: focus it and press Enter)
    const button = page.locator(`section:has(h2:text-is(${JSON.stringify(input.revokeApp)})) button[name="revoke"]`);
    if ((await button.count()) !== 1) throw new Error(`no single revoke button for ${input.revokeApp}: ${textBefore.slice(0, 500)}`);
    await button.focus();
    const revoked = await navigateBy(page, () => page.keyboard.press("Enter"));
    await page.locator('[role="status"]').first().waitFor({ state: "visible" });
    const textAfter = await page.evaluate(() => document.body.innerText);
    await shot("account-revoked.png");
    emit({
        signedInStatus,
        revokedStatus: revoked.status(),
        textBefore,
        textAfter,
        unlabelledInputs: unlabelled,
    });
} catch (e) {
    fail(e?.message || e);
} finally {
    await closeQuietly(browser);
}
