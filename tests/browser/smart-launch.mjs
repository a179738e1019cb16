// A SMART standalone launch completed by SMART's own client library (fhirclient, Node API):
// a tiny app on 127.0.0.1:{appPort} authorizes against {fhirBase} (public client, PKCE S256),
// headless Chromium signs in and approves on pdex's pages, the app exchanges the code, reads
// the patient, and refreshes the token if it got a refresh token. Input and output: README.md.
import http from "node:http";
import smart from "fhirclient";
import {
    closeQuietly,
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
} from "./lib.mjs";

startWatchdog("smart-launch.mjs");
failOnStrayErrors();

const input = readInput(["fhirBase", "clientId", "appPort", "scope", "username", "password", "screenshotDir"]);
const sensitive = input.sensitive ?? "withhold";
if (!["share", "withhold"].includes(sensitive)) fail(`sensitive must be "share" or "withhold", not ${JSON.stringify(sensitive)}`);
const appPort = Number(input.appPort);
if (!Number.isInteger(appPort) || appPort <= 0 || appPort > 65535) fail(`appPort must be a port number, not ${JSON.stringify(input.appPort)}`);
const appOrigin = `http://127.0.0.1:${appPort}`;
const redirectUri = `${appOrigin}/callback`;

// The session storage fhirclient's Node adapter needs: one browser, so one in-memory session.
const session = new Map();
const storage = {
    async get(key) {
        return session.get(key);
    },
    async set(key, value) {
        session.set(key, value);
        return value;
    },
    async unset(key) {
        return session.delete(key);
    },
};

/** The token response with the tokens themselves replaced by whether they were present. */
function redactTokens(tokenResponse) {
    const out = { ...(tokenResponse ?? {}) };
    for (const key of ["access_token", "refresh_token", "id_token"]) out[key] = Boolean(out[key]);
    return out;
}

// Settles when /callback has answered (with the result, or with the error it failed with).
let settleCallback;
const callbackDone = new Promise((resolve) => (settleCallback = resolve));

function sendJson(res, status, value) {
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
    res.end(JSON.stringify(value, null, 2));
}

async function handle(req, res) {
    const url = new URL(req.url, appOrigin);
    if (url.pathname === "/launch") {
        try {
            // Reads {fhirBase}/.well-known/smart-configuration, then redirects (302) to its authorize endpoint.
            await smart(req, res, storage).authorize({
                iss: input.fhirBase,
                clientId: input.clientId,
                scope: input.scope,
                redirectUri,
                pkceMode: "required",
            });
        } catch (e) {
            const error = `/launch: ${e?.message ?? e}`;
            settleCallback({ error });
            sendJson(res, 500, { error });
        }
        return;
    }
    if (url.pathname === "/callback") {
        try {
            const client = await smart(req, res, storage).ready();
            const tokenResponse = redactTokens(client.state.tokenResponse);
            const patientId = client.patient.id;
            if (!patientId) throw new Error("the token response names no patient");
            const patient = await client.request(`Patient/${encodeURIComponent(patientId)}`);
            let refreshed = false;
            let tokenResponseAfterRefresh = null;
            let accessTokenChanged = null;
            if (client.state.tokenResponse?.refresh_token) {
                const before = client.state.tokenResponse.access_token;
                await client.refresh();
                refreshed = true;
                tokenResponseAfterRefresh = redactTokens(client.state.tokenResponse);
                accessTokenChanged = client.state.tokenResponse.access_token !== before;
            }
            const result = { patientId, patient, tokenResponse, refreshed, tokenResponseAfterRefresh, accessTokenChanged };
            settleCallback({ result });
            sendJson(res, 200, result);
        } catch (e) {
            const error = `/callback (${url.search}): ${e?.message ?? e}`;
            settleCallback({ error });
            sendJson(res, 500, { error });
        }
        return;
    }
    sendJson(res, 404, { error: `no ${url.pathname} here` });
}

const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
        settleCallback({ error: `app: ${e?.message ?? e}` });
        if (!res.headersSent) sendJson(res, 500, { error: String(e) });
    });
});
server.requestTimeout = PAGE_TIMEOUT_MS;

let browser;
try {
    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(appPort, "127.0.0.1", resolve);
    });

    browser = await launchChromium(input);
    const { page, navigations } = await newPage(browser);
    const shot = screenshotter(page, input.screenshotDir);

    const launched = await navigateBy(page, () => page.goto(`${appOrigin}/launch`, { waitUntil: "commit" }));
    if (!(await hasSigninForm(page))) {
        const early = await Promise.race([callbackDone, Promise.resolve(null)]);
        if (early?.error) throw new Error(early.error);
        const text = await page.evaluate(() => document.body?.innerText ?? "");
        throw new Error(`no sign-in form after /launch (status ${launched.status()} at ${page.url()}): ${text.slice(0, 500)}`);
    }
    await shot("smart-signin.png");

    await signIn(page, input.username, input.password);
    await expectAuthorizationPage(page, "signing in");
    await shot("smart-authorize.png");

    await page.locator(`input[name="sensitive"][value="${sensitive}"]`).check();
    await page.locator('[name="decision"][value="approve"]').click();
    const outcome = await Promise.race([
        callbackDone,
        new Promise((resolve) =>
            setTimeout(
                () => resolve({ error: `the app's /callback did not finish within ${(2 * PAGE_TIMEOUT_MS) / 1000} s of "approve"; browser at ${page.url()}; navigations: ${JSON.stringify(navigations)}` }),
                2 * PAGE_TIMEOUT_MS,
            ).unref(),
        ),
    ]);
    await page.waitForLoadState("load").catch(() => {});
    await shot("smart-done.png").catch(() => {});
    if (outcome.error) throw new Error(outcome.error);
    emit(outcome.result);
} catch (e) {
    emit({ error: e?.message ?? String(e) });
    process.exitCode = 1;
} finally {
    await closeQuietly(browser);
    server.closeAllConnections?.();
    server.close();
}
process.exit(process.exitCode ?? 0);
