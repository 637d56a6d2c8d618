// A real, certified OpenID Connect provider (panva/oidc-provider) for the sign-in tests.
//
//   node provider.js PORT
//
// Serves http://127.0.0.1:PORT with two confidential clients that send their secret in the form
// body (client_secret_post): "symbolon-rs256" (ID tokens signed RS256, keys in the JWKS) and
// "symbolon-hs256" (signed HS256 with the client secret). Their redirect URI is
// http://127.0.0.1/oidc/callback/ on any port: they are registered as native applications, for
// which the provider matches loopback redirect URIs without the port (RFC 8252 §7.3), so each
// test server may listen wherever it likes. Any login is accepted with any
// password at the development interaction pages; the login is the account id, and a login that
// looks like an e-mail address is the account's e-mail. Logins starting with "noemail" have no
// e-mail claim; logins starting with "unverified" have email_verified=false.
//
// Fault injection for the tests: GET /__control?tamper=1 makes the token endpoint return ID
// tokens whose signature is broken; GET /__control?tamper=0 restores normal service.

import Provider from 'oidc-provider';

const [port] = process.argv.slice(2);
if (!port) {
  console.error('usage: node provider.js PORT');
  process.exit(2);
}

const CLIENT_SECRET = 'symbolon-test-client-secret-0123456789abcdef';
const issuer = `http://127.0.0.1:${port}`;
const mode = { tamper: false };

function client(clientId, alg) {
  return {
    client_id: clientId,
    client_secret: CLIENT_SECRET,
    application_type: 'native',
    redirect_uris: ['http://127.0.0.1/oidc/callback/'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: alg,
  };
}

function claimsFor(login) {
  const claims = { sub: login };
  if (login.startsWith('noemail')) {
    return claims;
  }
  claims.email = login.includes('@') ? login : `${login}@example.com`;
  claims.email_verified = !login.startsWith('unverified');
  return claims;
}

const configuration = {
  clients: [client('symbolon-rs256', 'RS256'), client('symbolon-hs256', 'HS256')],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  cookies: { keys: ['symbolon-test-cookie-key'] },
  features: { devInteractions: { enabled: true } },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'HS256'] },
  async findAccount(ctx, sub) {
    return { accountId: sub, async claims() { return claimsFor(sub); } };
  },
  // A first-party client: consent is implied, so the tests only drive the login page.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
// Errors go to the log, where a failing test's output points.
provider.on('server_error', (ctx, err) => console.error('server_error', ctx.path, err));
provider.on('authorization.error', (ctx, err) => console.error('authorization.error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err));

function breakSignature(jwt) {
  const [header, payload, signature] = jwt.split('.');
  const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
  return [header, payload, flipped].join('.');
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__control') {
    mode.tamper = ctx.query.tamper === '1';
    ctx.body = { tamper: mode.tamper };
    return;
  }
  await next();
  if (mode.tamper && ctx.path === '/token' && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: breakSignature(ctx.body.id_token) };
  }
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
