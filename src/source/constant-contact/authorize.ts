/**
 * First-time authorisation for `cc-optout auth constant-contact`: obtains a refresh token and stores it
 * (with the access token) in the key/value store exactly as auth.ts does on a refresh.
 *
 * Two flows:
 * - `authorizeWithPkce`: authorization code + PKCE (S256) with a loopback redirect
 *   `http://127.0.0.1:<redirectPort or a free port>/callback` (RFC 8252). The authorize URL is handed to
 *   `io.print` (and `io.openUrl` when given); the loopback server waits for the browser's redirect, checks
 *   `state`, and the code is exchanged at `/token` with the verifier. The redirect URI must be registered
 *   for the application in Constant Contact's developer portal (hence the fixed `redirectPort` option).
 * - `authorizeWithDeviceFlow`: RFC 8628, for machines without a browser: `/device/authorize`, print the
 *   verification URL and user code, then poll `/token` honouring `interval`, `authorization_pending`,
 *   `slow_down` and `expired_token`.
 * Scopes: `contact_data offline_access` (offline_access is what yields a refresh token).
 */
import * as crypto from 'crypto';
import * as http from 'http';
import { AddressInfo } from 'net';
import { ResolvedSource } from '../../config';
import { registerSecret } from '../../log';
import {
  AuthDeps,
  decodeTokenResponse,
  persistRefreshTokenFirst,
  describeOAuthError,
  storeTokens,
  TokenEndpoint,
  TokenEndpointOptions,
  TokenEndpointResult,
} from './auth';
import { DeviceAuthorization } from './codecs';
import { sourceError } from './errors';
import { isLeft } from 'fp-ts/Either';
import { formatErrors } from '../../codec';

export const CC_SCOPES = 'contact_data offline_access';
export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

type AuthConfig = Pick<ResolvedSource, 'clientId' | 'clientSecret' | 'authBaseUrl' | 'redirectPort'>;

/** How the flows talk to the person running the command. */
export interface AuthorizeIo {
  /** Show a line (the URL to open, the user code). */
  print(message: string): void;
  /** Optionally open a URL in the person's browser. Failures are ignored (the URL was printed). */
  openUrl?(url: string): void | Promise<void>;
}

export interface AuthorizeResult {
  /** When the stored access token expires. */
  readonly expiresAt: Date;
  /** Whether a refresh token was returned and stored (false: `offline_access` was not granted). */
  readonly refreshToken: boolean;
  readonly scope: string | null;
}

/** A PKCE verifier (43 chars of base64url, 256 bits) and its S256 challenge. */
export function createPkcePair(): { verifier: string; challenge: string } {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

/** `${authBaseUrl}/authorize?client_id&redirect_uri&response_type=code&scope&state&code_challenge&code_challenge_method=S256`. */
export function buildAuthorizeUrl(p: {
  authBaseUrl: string;
  clientId: string;
  redirectUri: string;
  state: string;
  codeChallenge: string;
  scope?: string;
}): string {
  const query: Array<[string, string]> = [
    ['client_id', p.clientId],
    ['redirect_uri', p.redirectUri],
    ['response_type', 'code'],
    ['scope', p.scope ?? CC_SCOPES],
    ['state', p.state],
    ['code_challenge', p.codeChallenge],
    ['code_challenge_method', 'S256'],
  ];
  return `${p.authBaseUrl}/authorize?` + query.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
}

export interface PkceOptions extends TokenEndpointOptions {
  /** Give up waiting for the browser after this long (default 5 minutes). */
  readonly timeoutMs?: number;
  /** Called once the loopback server listens, with its redirect URI (tests use it; the CLI need not). */
  readonly onListening?: (redirectUri: string) => void;
}

function page(title: string, text: string): string {
  const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body><h1>${esc(title)}</h1><p>${esc(text)}</p></body></html>`;
}

/** Start the loopback server and resolve with the authorization code once the browser comes back. */
async function listenForCode(
  port: number,
  expectedState: string,
  timeoutMs: number,
): Promise<{ redirectUri: string; code: Promise<string>; close: () => void }> {
  let settle: { resolve: (code: string) => void; reject: (err: Error) => void } | null = null;
  const code = new Promise<string>((resolve, reject) => {
    settle = { resolve, reject };
  });
  const finish = (err: Error | null, value?: string): void => {
    if (!settle) return;
    const s = settle;
    settle = null;
    if (err) s.reject(err);
    else s.resolve(value!);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const reply = (status: number, title: string, text: string): void => {
      res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', Connection: 'close' });
      res.end(page(title, text));
    };
    if (url.pathname !== '/callback' || !settle) {
      reply(404, 'Not found', 'Nothing to see here.');
      return;
    }
    const q = url.searchParams;
    const error = q.get('error');
    if (error) {
      reply(400, 'Authorisation failed', `${error}: ${q.get('error_description') ?? ''}`);
      finish(
        sourceError(
          `Constant Contact authorisation was refused (${error}${q.get('error_description') ? `: ${q.get('error_description')}` : ''}).`,
        ),
      );
      return;
    }
    if (q.get('state') !== expectedState) {
      reply(400, 'Authorisation failed', 'The state parameter does not match this request. Run the command again.');
      finish(
        sourceError(
          'Constant Contact authorisation failed: the callback state does not match (stale browser tab or forged request). Run the command again.',
        ),
      );
      return;
    }
    const value = q.get('code');
    if (!value) {
      reply(400, 'Authorisation failed', 'The callback carries no authorization code.');
      finish(sourceError('Constant Contact authorisation failed: the callback carries no authorization code.'));
      return;
    }
    registerSecret(value);
    reply(200, 'Constant Contact is connected', 'You can close this tab and return to the terminal.');
    finish(null, value);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        sourceError(
          `cannot listen on 127.0.0.1:${port} for the OAuth redirect (${(err as Error).message}); set source.redirectPort to a free port`,
        ),
      ),
    );
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  const timer = setTimeout(
    () =>
      finish(
        sourceError(
          `Constant Contact authorisation timed out after ${Math.round(timeoutMs / 1000)} s waiting for the browser. Run the command again.`,
        ),
      ),
    timeoutMs,
  );
  timer.unref();
  const close = (): void => {
    clearTimeout(timer);
    server.close();
    server.closeAllConnections();
  };
  return { redirectUri: `http://127.0.0.1:${actual}/callback`, code, close };
}

function tokenFailure(what: string, r: Extract<TokenEndpointResult, { ok: false }>): Error {
  return sourceError(`${what} failed (${describeOAuthError(r)}).`, r.status, r.error);
}

async function finishWith(data: unknown, what: string, deps: AuthDeps): Promise<AuthorizeResult> {
  // a server-backed store queues set(): the new refresh token is durable before anything else happens
  if (persistRefreshTokenFirst(deps.kv, data)) await deps.kv.flush?.();
  const tokens = decodeTokenResponse(data, what);
  const expiresAt = storeTokens(deps.kv, tokens, deps.clock, deps.logger);
  await deps.kv.flush?.();
  const hasRefresh = typeof tokens.refresh_token === 'string' && tokens.refresh_token !== '';
  if (!hasRefresh) {
    deps.logger.warn(
      'constant-contact: no refresh token was returned; the offline_access scope may not be granted to this application',
    );
  }
  return { expiresAt, refreshToken: hasRefresh, scope: tokens.scope ?? null };
}

/**
 * Authorization code + PKCE on a loopback redirect. Prints the authorize URL, waits for the browser,
 * exchanges the code and stores the tokens.
 */
export async function authorizeWithPkce(
  config: AuthConfig,
  deps: AuthDeps,
  io: AuthorizeIo,
  options: PkceOptions = {},
): Promise<AuthorizeResult> {
  registerSecret(config.clientSecret);
  const endpoint = new TokenEndpoint(config, deps, options);
  const { verifier, challenge } = createPkcePair();
  registerSecret(verifier);
  const state = crypto.randomBytes(16).toString('base64url');
  const loopback = await listenForCode(config.redirectPort, state, options.timeoutMs ?? 5 * 60_000);
  try {
    options.onListening?.(loopback.redirectUri);
    const url = buildAuthorizeUrl({
      authBaseUrl: config.authBaseUrl,
      clientId: config.clientId,
      redirectUri: loopback.redirectUri,
      state,
      codeChallenge: challenge,
    });
    io.print(`Open this URL in a browser and allow access to Constant Contact:\n\n  ${url}\n`);
    if (io.openUrl) {
      try {
        await io.openUrl(url);
      } catch {
        // the URL is printed; opening a browser is a convenience
      }
    }
    const code = await loopback.code;
    const res = await endpoint.post('/token', {
      grant_type: 'authorization_code',
      code,
      redirect_uri: loopback.redirectUri,
      code_verifier: verifier,
    });
    if (!res.ok) throw tokenFailure('Constant Contact authorization code exchange', res);
    const result = await finishWith(res.data, 'Constant Contact authorization code exchange', deps);
    io.print('Constant Contact is authorised; the tokens are stored.');
    return result;
  } finally {
    loopback.close();
  }
}

export type DeviceFlowOptions = TokenEndpointOptions;

/**
 * Device authorization grant. Prints where to go and the user code, then polls the token endpoint until
 * the person approves, refuses, or the code expires.
 */
export async function authorizeWithDeviceFlow(
  config: AuthConfig,
  deps: AuthDeps,
  io: AuthorizeIo,
  options: DeviceFlowOptions = {},
): Promise<AuthorizeResult> {
  registerSecret(config.clientSecret);
  const endpoint = new TokenEndpoint(config, deps, options);
  const start = await endpoint.post('/device/authorize', { scope: CC_SCOPES }, { clientIdInBody: true });
  if (!start.ok) throw tokenFailure('Constant Contact device authorization', start);
  const decoded = DeviceAuthorization.decode(start.data);
  if (isLeft(decoded)) {
    throw sourceError(
      `Constant Contact device authorization: unexpected body (${formatErrors(decoded.left).join('; ')})`,
    );
  }
  const da = decoded.right;
  registerSecret(da.device_code);

  const target = da.verification_uri_complete ?? da.verification_uri;
  io.print(
    da.verification_uri_complete
      ? `Open ${da.verification_uri_complete} and confirm the code ${da.user_code}.`
      : `Open ${da.verification_uri} and enter the code ${da.user_code}.`,
  );
  if (io.openUrl) {
    try {
      await io.openUrl(target);
    } catch {
      // printed already
    }
  }

  let intervalMs = Math.max(1, da.interval ?? 5) * 1000;
  const deadline = deps.clock.now().getTime() + Math.max(1, da.expires_in ?? 600) * 1000;
  for (;;) {
    await deps.clock.sleep(intervalMs);
    if (deps.clock.now().getTime() > deadline) {
      throw sourceError(
        'The Constant Contact device code expired before it was approved. Run the command again.',
        undefined,
        'expired_token',
      );
    }
    const res = await endpoint.post('/token', { grant_type: DEVICE_CODE_GRANT, device_code: da.device_code });
    if (res.ok) {
      const result = await finishWith(res.data, 'Constant Contact device authorization', deps);
      io.print('Constant Contact is authorised; the tokens are stored.');
      return result;
    }
    switch (res.error) {
      case 'authorization_pending':
        continue;
      case 'slow_down':
        intervalMs += 5000; // RFC 8628 §3.5
        continue;
      case 'expired_token':
        throw sourceError(
          'The Constant Contact device code expired before it was approved. Run the command again.',
          res.status,
          res.error,
        );
      case 'access_denied':
        throw sourceError(
          'Constant Contact authorisation was refused in the browser (access_denied).',
          res.status,
          res.error,
        );
      default:
        throw tokenFailure('Constant Contact device authorization', res);
    }
  }
}
