// A real OpenID Connect provider for the hub's OIDC sign-in tests: the certified `oidc-provider`
// package with a test configuration. A test peer only: tests/common/oidc.rs starts it on a
// loopback port; it is never part of a build of the hub.
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// CONFIG.json:
//   port         port to listen on at 127.0.0.1 (0 or absent: any free one)
//   issuer       issuer URL (default http://127.0.0.1:<port>)
//   clients      oidc-provider client metadata: client_id, client_secret, redirect_uris,
//                post_logout_redirect_uris, token_endpoint_auth_method (default
//                client_secret_basic), ...
//   accounts     [{ sub, email, name, preferred_username, oid, roles: [], groups: [], ... }]
//   jwks         { keys: [private RSA JWK with kid] } signing keys (absent: one fresh RSA key)
//   ttl          overrides of the token lifetimes in seconds (IdToken, AccessToken, ...)
//   ready_file   where to write { issuer, port, kid, pkcs1_der (base64), jwks (private) }
//                before printing the ready line
//
// Prints `listening <issuer>` on stdout when it accepts connections; errors go to stderr.
// Sign-in is the dev login form (devInteractions) without a consent screen: the login is an
// account's `sub` or `email`, the password anything; an unknown login gets a 400 page that says
// so. The provider's pages load nothing from outside loopback. SIGTERM or SIGINT exits at once.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';

function fail(message) {
  console.error(`oidc peer: ${message}`);
  process.exit(2);
}

const configPath = process.argv[2];
if (!configPath) fail('usage: node provider.mjs CONFIG.json');
let config;
try {
  config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
} catch (e) {
  fail(`reading ${configPath}: ${e.message}`);
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}

const base64url = (buf) => Buffer.from(buf).toString('base64url');

// RFC 7638 thumbprint of an RSA key: the kid of a generated key.
function rsaThumbprint(jwk) {
  const canonical = JSON.stringify({ e: jwk.e, kty: 'RSA', n: jwk.n });
  return base64url(crypto.createHash('sha256').update(canonical).digest());
}

function signingKeys() {
  if (config.jwks) {
    const keys = config.jwks.keys ?? [];
    if (!keys.length || !keys.every((k) => k.kty === 'RSA' && k.d && k.kid)) {
      fail('config.jwks.keys must be private RSA JWKs, each with a kid');
    }
    return { keys: keys.map((k) => ({ alg: 'RS256', use: 'sig', ...k })) };
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: rsaThumbprint(jwk), alg: 'RS256', use: 'sig' }] };
}

const accounts = (config.accounts ?? []).map((a) => {
  if (typeof a.sub !== 'string' || !a.sub) fail(`account without a sub: ${JSON.stringify(a)}`);
  return a;
});

// The account whose sub, or else whose email, is `login` (emails compared case-insensitively).
function accountByLogin(login) {
  const l = String(login ?? '').trim();
  return accounts.find((a) => a.sub === l)
    ?? accounts.find((a) => typeof a.email === 'string' && a.email.toLowerCase() === l.toLowerCase());
}

async function findAccount(ctx, id) {
  const account = accountByLogin(id);
  if (!account) return undefined;
  return {
    accountId: account.sub,
    // Every claim the account has; the provider keeps those the granted scopes ask for.
    async claims() {
      const claims = { ...account };
      if (claims.email !== undefined && claims.email_verified === undefined) {
        claims.email_verified = true;
      }
      return claims;
    },
  };
}

// First-party clients: no consent screen. The grant covers whatever was asked for.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  if (grantId) {
    const grant = await oidc.provider.Grant.find(grantId);
    if (grant) return grant;
  }
  const accountId = oidc.session.accountId;
  if (!accountId) return undefined;
  const grant = new oidc.provider.Grant({ accountId, clientId: oidc.client.clientId });
  grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
  grant.addOIDCClaims([...oidc.requestParamClaims]);
  await grant.save();
  return grant;
}

const clients = (config.clients ?? []).map((c) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...c,
}));

const htmlEscape = (s) => String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

// Upstream of the dev login form: maps the login (sub or email) to the account's sub, and turns
// an unknown login into a visible error instead of a silent return to the form.
function loginMiddleware(provider) {
  return async function devLogin(ctx, next) {
    const m = ctx.method === 'POST' && /^\/interaction\/([^/]+)$/.exec(ctx.path);
    if (!m) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res).catch(() => undefined);
    if (details?.prompt?.name !== 'login') return next();
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = querystring.parse(Buffer.concat(chunks).toString('utf8'));
    if (body.prompt !== 'login') {
      ctx.status = 400;
      ctx.body = 'expected the login form (prompt=login)';
      return undefined;
    }
    const account = accountByLogin(body.login);
    if (!account) {
      console.error(`oidc peer: sign-in refused: unknown login ${JSON.stringify(body.login)}`);
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign-in failed</title></head>
<body><h1>Sign-in failed</h1>
<p id="error">Unknown login: no account has the sub or email ${htmlEscape(JSON.stringify(String(body.login ?? '')))}.</p>
<p><a href="${htmlEscape(`/interaction/${m[1]}`)}">Try again</a></p></body></html>`;
      return undefined;
    }
    ctx.respond = false; // interactionFinished answers the 303 itself
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId: account.sub },
    }, { mergeWithLastSubmission: false });
    return undefined;
  };
}

// The provider's own pages (login form, logout confirmation, error page) @import a web font
// from the internet. Tests may render them in a browser, which must reach nothing but loopback:
// drop every @import of a remote stylesheet.
async function loopbackOnlyPages(ctx, next) {
  await next();
  if (typeof ctx.body === 'string' && ctx.body.includes('@import url(http')) {
    ctx.body = ctx.body.replace(/@import url\(https?:[^)]*\);?/g, '');
  }
}

const server = http.createServer();
server.on('error', (e) => fail(`listening on ${HOST}:${config.port ?? 0}: ${e.message}`));
server.listen(config.port ?? 0, HOST, () => {
  const { port } = server.address();
  const issuer = config.issuer ?? `http://${HOST}:${port}`;
  const jwks = signingKeys();

  const provider = new Provider(issuer, {
    clients,
    findAccount,
    loadExistingGrant,
    jwks,
    claims: {
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
      openid: ['sub', 'oid', 'roles', 'groups'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    // The scope's claims go into the ID token of the code flow too (as Entra ID does), not
    // only to the userinfo endpoint.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    cookies: { keys: ['presence-hub-oidc-test-peer-cookie-key-0123456789'] },
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 120,
      IdToken: 600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      ...config.ttl,
    },
  });

  for (const event of ['server_error', 'authorization.error', 'grant.error', 'end_session.error',
    'userinfo.error', 'jwks.error', 'discovery.error']) {
    provider.on(event, (ctx, err) => {
      const detail = [err?.error, err?.error_description ?? err?.message, err?.cause?.message]
        .filter(Boolean).join(': ');
      console.error(`oidc peer: ${event}: ${detail}`);
    });
  }

  provider.use(loopbackOnlyPages);
  provider.use(loginMiddleware(provider));
  server.on('request', provider.callback());

  if (config.ready_file) {
    const first = jwks.keys[0];
    const der = crypto.createPrivateKey({ key: first, format: 'jwk' })
      .export({ type: 'pkcs1', format: 'der' });
    fs.writeFileSync(config.ready_file, JSON.stringify({
      issuer, port, kid: first.kid, pkcs1_der: der.toString('base64'), jwks,
    }));
  }
  console.log(`listening ${issuer}`);
});
