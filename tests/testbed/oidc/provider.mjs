// The test bed's OpenID Connect provider: panva's oidc-provider (OpenID-certified) with one
// confidential client, password accounts from the config, and login and consent pages of
// its own, served over HTTPS. Started by provider.py:
//
//     node provider.mjs CONFIG.json
//
// CONFIG.json: {issuer, host, port, cert, key, client: {client_id, client_secret,
// redirect_uris}, accounts: {login: {password, claims: {preferred_username, email, groups}}}}.
// Prints "ready <issuer>" once listening; exits 0 on SIGTERM. Everything lives in memory.
// Two warnings on stderr are expected: the in-memory adapter (on purpose: a fresh provider
// per test) and, on Node 20, "Unsupported runtime" (9.x wants 22 LTS; 20 runs it fine).

import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = new Map(Object.entries(config.accounts)); // a Map: no "__proto__" logins

// A signing key made at each start: without one, oidc-provider signs ID tokens with a
// published development key (and says so).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }), kid: 'bed', alg: 'RS256', use: 'sig',
};

const html = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const page = (title, body) => `<!doctype html>
<html><head><meta charset="utf-8"><title>${html(title)}</title></head>
<body><h1>${html(title)}</h1>${body}</body></html>`;

const provider = new Provider(config.issuer, {
  clients: [{
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // oauthenticator sends the secret in a Basic header when basic_auth is true and in the
    // form otherwise (its default since 16.0.2); oidc-provider 9 takes either for a client
    // registered with one of the two.
    token_endpoint_auth_method: 'client_secret_basic',
    ...config.client,
  }],
  jwks: { keys: [signingKey] },
  // Each key of `claims` that maps to a list is a scope; `groups` is ours.
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email'],
    groups: ['groups'],
  },
  async findAccount(ctx, login) {
    const account = accounts.get(login);
    if (!account) return undefined;
    // oidc-provider filters these down to what the token's scopes grant.
    return { accountId: login, claims: () => ({ sub: login, ...account.claims }) };
  },
  // Required of every client, not just public ones (the default): oauthenticator 17 sends
  // an S256 challenge, and a hub that stopped doing so should fail its login test.
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false }, // the pages below replace them
    // Left on (the default): without a `resource` parameter, which oauthenticator never
    // sends, the access token is an opaque one for the userinfo endpoint.
    resourceIndicators: { enabled: true },
  },
  cookies: {
    keys: [randomBytes(32).toString('base64url')],
    // The provider is only ever reached over HTTPS, where secure cookies are sent back.
    long: { httpOnly: true, sameSite: 'lax', secure: true },
    short: { httpOnly: true, sameSite: 'lax', secure: true },
  },
  // Set explicitly: the defaults are fine but print a notice each.
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${html(JSON.stringify(out, null, 2))}</pre>`);
  },
});

// On stderr (the test's log): why a hub's request was refused, e.g. a wrong secret.
for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error']) {
  provider.on(event, (ctx, error) => {
    const why = [error.error_description, error.error_detail].filter(Boolean).join(': ');
    console.error(`${event}: ${error.message}${why ? ` (${why})` : ''}`);
  });
}

// Both sides hashed to one length, so the comparison takes the same time for any guess.
function passwordMatches(given, expected) {
  const digest = (value) => createHash('sha256').update(String(value)).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

function loginPage(uid, { login = '', error = '' } = {}) {
  return page('Sign in', `${error ? `<p id="error">${html(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${html(uid)}/login">
  <label>User name <input id="login" name="login" value="${html(login)}" autofocus></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="submit" type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, { params, prompt }) {
  const scopes = prompt.details.missingOIDCScope ?? [];
  return page('Authorize', `<p>${html(params.client_id)} asks for:
  <span id="scopes">${html(scopes.join(' '))}</span></p>
<form id="consent-form" method="post" action="/interaction/${html(uid)}/confirm">
  <button id="approve" type="submit">Allow</button>
</form>`);
}

// The grant is exactly what the client asked for: scopes, claims, resource scopes.
async function grantRequested({ grantId, params, prompt: { details }, session }) {
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function formBody(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, body) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store',
  });
  res.end(body);
}

// GET /interaction/<uid>, POST /interaction/<uid>/login, POST /interaction/<uid>/confirm.
// The interaction's cookie is scoped to /interaction/<uid>; a page of another (stale)
// interaction is refused rather than acting on the current one.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const step = details.prompt.name;
  if (details.uid !== uid) {
    return send(res, 400, page('Error', '<p id="error">stale sign-in page</p>'));
  }

  if (req.method === 'GET' && !action) {
    return send(res, 200, step === 'login' ? loginPage(uid) : consentPage(uid, details));
  }
  if (req.method === 'POST' && action === 'login' && step === 'login') {
    const form = await formBody(req);
    const login = form.get('login') ?? '';
    const account = accounts.get(login);
    // Compared even for an unknown login, so the answer's timing tells nothing.
    const given = form.get('password') ?? '';
    const matches = passwordMatches(given, account?.password ?? randomBytes(16));
    if (!account || !matches) {
      return send(res, 401, loginPage(uid, { login, error: 'Wrong user name or password.' }));
    }
    const result = { login: { accountId: login } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && step === 'consent') {
    const grantId = await grantRequested(details);
    const result = { consent: { grantId } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }
  const unexpected = `unexpected ${req.method} ${action ?? ''} in the ${step} step`;
  return send(res, 400, page('Error', `<p id="error">${html(unexpected)}</p>`));
}

const callback = provider.callback();
const server = createServer(
  { cert: readFileSync(config.cert), key: readFileSync(config.key) },
  (req, res) => {
    const path = req.url.split('?')[0];
    const match = /^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/.exec(path);
    if (!match) return callback(req, res);
    return interaction(req, res, match[1], match[2]).catch((error) => {
      // Mostly an expired or missing interaction (its cookie is gone): start over.
      const why = error.error_description ?? error.message;
      console.error(`interaction: ${why}`);
      if (!res.headersSent) send(res, 400, page('Error', `<p id="error">${html(why)}</p>`));
    });
  },
);

server.listen(config.port, config.host, () => console.log(`ready ${config.issuer}`));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // keep-alive connections would hold close() open
  });
}
