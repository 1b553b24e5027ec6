/**
 * Salesforce OAuth 2.0 token acquisition: JWT bearer (RS256 assertion signed with node crypto), client
 * credentials, refresh token (with rotation persisted in the target's key/value store), or a ready access token.
 * Token requests are sent by jsforce's OAuth2 client over the connector's counting transport.
 */
import * as crypto from 'crypto';
import { OAuth2 } from 'jsforce';
import type Transport from 'jsforce/lib/transport';
import { Capabilities, Secrets } from '../../src/sdk';
import { ResolvedConfig, SalesforceAuth } from './config';

export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** Salesforce accepts JWT assertions that expire within 3 minutes. */
export const JWT_LIFETIME_SECONDS = 180;
const KV_REFRESH_TOKEN = 'refresh_token';

export interface Session {
  readonly accessToken: string;
  readonly instanceUrl: string;
}

/** A problem with the configured credentials themselves (unreadable key, missing instance URL). */
export class AuthConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthConfigError';
  }
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** `header.claims.signature` for the OAuth 2.0 JWT bearer flow (RFC 7523), signed RS256. */
export function jwtAssertion(opts: {
  clientId: string;
  username: string;
  audience: string;
  privateKey: crypto.KeyObject | string;
  now: Date;
}): string {
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
  const claims = b64url(
    JSON.stringify({
      iss: opts.clientId,
      sub: opts.username,
      aud: opts.audience,
      exp: Math.floor(opts.now.getTime() / 1000) + JWT_LIFETIME_SECONDS,
    }),
  );
  const signature = crypto.sign('RSA-SHA256', Buffer.from(`${header}.${claims}`), opts.privateKey);
  return `${header}.${claims}.${b64url(signature)}`;
}

/** A PEM from a file or an environment variable (where newlines often arrive as literal `\n`). */
/** `register` masks the key's text in logs (the engine's `caps.secrets.register`). */
export function loadPrivateKey(
  auth: Extract<SalesforceAuth, { type: 'jwt' }>,
  readFile: (p: string) => string,
  register: Secrets['register'] = () => undefined,
): crypto.KeyObject {
  let pem: string;
  if (auth.privateKeyPath !== undefined) {
    try {
      pem = readFile(auth.privateKeyPath);
    } catch (e) {
      throw new AuthConfigError(`auth.privateKeyPath: cannot read ${auth.privateKeyPath}: ${(e as Error).message}`);
    }
  } else {
    pem = auth.privateKey ?? '';
    if (!pem.includes('\n') && pem.includes('\\n')) pem = pem.replace(/\\n/g, '\n');
  }
  register(pem);
  try {
    const key = crypto.createPrivateKey(pem);
    if (key.asymmetricKeyType !== 'rsa')
      throw new Error(`expected an RSA key, got ${key.asymmetricKeyType ?? 'unknown'}`);
    return key;
  } catch (e) {
    const where =
      auth.privateKeyPath !== undefined ? `auth.privateKeyPath (${auth.privateKeyPath})` : 'auth.privateKey';
    // crypto's messages never echo the key material.
    throw new AuthConfigError(`${where} is not a usable PEM RSA private key: ${(e as Error).message}`);
  }
}

interface TokenResponseLike {
  access_token?: string;
  instance_url?: string;
  refresh_token?: string;
}

function sha256(s: string): string {
  return crypto.createHash('sha256').update(s).digest('hex');
}

/**
 * Obtains access tokens for one target. `obtain()` is called for the first token and for each refresh;
 * the caller (client.ts) decides how often a refresh is allowed.
 */
export class Authenticator {
  private key: crypto.KeyObject | null = null;

  constructor(
    private readonly cfg: ResolvedConfig,
    private readonly caps: Capabilities,
    private readonly transport: Transport,
  ) {
    registerAuthSecrets(cfg.auth, caps.secrets);
  }

  /** True when a new token can be obtained without the user (everything except a bare access token). */
  get canRefresh(): boolean {
    return this.cfg.auth.type !== 'access-token';
  }

  /** The token endpoint used by this auth type. */
  tokenUrl(): string | null {
    switch (this.cfg.auth.type) {
      case 'jwt':
      case 'refresh-token':
        return `${this.cfg.loginUrl}/services/oauth2/token`;
      case 'client-credentials':
        return `${this.requireInstanceUrl()}/services/oauth2/token`;
      case 'access-token':
        return null;
    }
  }

  async obtain(): Promise<Session> {
    const auth = this.cfg.auth;
    if (auth.type === 'access-token') {
      return { accessToken: auth.accessToken, instanceUrl: this.requireInstanceUrl() };
    }
    const tokenUrl = this.tokenUrl()!;
    const origin = tokenUrl.replace(/\/services\/oauth2\/token$/, '');
    let res: TokenResponseLike;
    if (auth.type === 'jwt') {
      if (!this.key) this.key = loadPrivateKey(auth, this.caps.readFile, this.caps.secrets.register);
      const assertion = jwtAssertion({
        clientId: auth.clientId,
        username: auth.username,
        audience: this.cfg.loginUrl,
        privateKey: this.key,
        now: this.caps.clock.now(),
      });
      res = await this.oauth2(origin).requestToken({ grant_type: JWT_BEARER_GRANT, assertion });
    } else if (auth.type === 'client-credentials') {
      res = await this.oauth2(origin, auth.clientId, auth.clientSecret).requestToken({
        grant_type: 'client_credentials',
      });
    } else {
      const current = this.currentRefreshToken(auth.refreshToken);
      res = await this.oauth2(origin, auth.clientId, auth.clientSecret).refreshToken(current);
      if (typeof res.refresh_token === 'string' && res.refresh_token !== current) {
        // Rotated: persist durably before the new access token is used.
        this.caps.secrets.register(res.refresh_token);
        // a credential: written even under a stale fleet lease (the rotation killed the old token)
        const kv = this.caps.kv;
        const value = JSON.stringify({ seed: sha256(auth.refreshToken), token: res.refresh_token });
        if (kv.setCredential) kv.setCredential(KV_REFRESH_TOKEN, value);
        else kv.set(KV_REFRESH_TOKEN, value);
        // a server-backed store queues set(): durable before the new access token is used
        await this.caps.kv.flush?.();
      }
    }
    if (typeof res.access_token !== 'string' || res.access_token === '') {
      throw new Error('the token endpoint answered without an access_token');
    }
    this.caps.secrets.register(res.access_token);
    // A configured instanceUrl overrides the one the token endpoint hands out (proxies, emulators).
    const instanceUrl =
      this.cfg.instanceUrl ?? (typeof res.instance_url === 'string' ? res.instance_url.replace(/\/+$/, '') : '');
    if (!instanceUrl)
      throw new Error('the token endpoint answered without an instance_url and no instanceUrl is configured');
    return { accessToken: res.access_token, instanceUrl };
  }

  /** The newest refresh token: a rotated one from the store, unless the configured seed changed. */
  private currentRefreshToken(seed: string): string {
    const raw = this.caps.kv.get(KV_REFRESH_TOKEN);
    if (raw) {
      try {
        const stored = JSON.parse(raw) as { seed?: string; token?: string };
        if (stored.seed === sha256(seed) && typeof stored.token === 'string') {
          this.caps.secrets.register(stored.token);
          return stored.token;
        }
      } catch {
        // ignore a corrupt entry: the configured token still works or fails loudly
      }
    }
    return seed;
  }

  private requireInstanceUrl(): string {
    if (!this.cfg.instanceUrl)
      throw new AuthConfigError(`instanceUrl is required with auth.type "${this.cfg.auth.type}"`);
    return this.cfg.instanceUrl;
  }

  private oauth2(origin: string, clientId?: string, clientSecret?: string): OAuth2 {
    const o = new OAuth2({
      tokenServiceUrl: `${origin}/services/oauth2/token`,
      authzServiceUrl: `${origin}/services/oauth2/authorize`,
      ...(clientId !== undefined ? { clientId } : {}),
      ...(clientSecret !== undefined ? { clientSecret } : {}),
    });
    o._transport = this.transport;
    return o;
  }
}

export function registerAuthSecrets(auth: SalesforceAuth, secrets: Secrets): void {
  const registerSecret = (v: string | undefined): void => secrets.register(v);
  switch (auth.type) {
    case 'jwt':
      registerSecret(auth.privateKey);
      break;
    case 'client-credentials':
      registerSecret(auth.clientSecret);
      break;
    case 'refresh-token':
      registerSecret(auth.refreshToken);
      registerSecret(auth.clientSecret);
      break;
    case 'access-token':
      registerSecret(auth.accessToken);
      break;
  }
}
