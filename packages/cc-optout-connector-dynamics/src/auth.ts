/**
 * Access tokens for Dataverse through Microsoft Entra ID, OAuth 2.0 client credentials, with @azure/msal-node's
 * ConfidentialClientApplication (scope `<environment URL>/.default`). MSAL caches the token in memory and
 * returns it until it is about to expire; `get(true)` skips that cache (after a 401).
 *
 * MSAL is told the authority's endpoints (`authorityMetadata`, `cloudDiscoveryMetadata`, `knownAuthorities`)
 * so it makes no instance-discovery or OpenID-configuration request: the only Entra call is the token POST.
 * When the config names a CA file (`auth.caPath`: a private CA, or the emulator's self-signed certificate),
 * MSAL's network client is an axios instance whose https.Agent trusts that CA; otherwise MSAL's own client.
 */
import * as https from 'https';
import axios, { AxiosInstance } from 'axios';
import {
  ConfidentialClientApplication,
  INetworkModule,
  NetworkRequestOptions,
  NetworkResponse,
  LogLevel,
} from '@azure/msal-node';

export interface AuthSettings {
  tenantId: string;
  clientId: string;
  clientSecret: string;
  /** https origin of the Entra authority (default https://login.microsoftonline.com). */
  authorityHost: string;
  /** PEM text of a CA to trust for the authority (from auth.caPath), or null. */
  ca: string | null;
  /** The Dataverse environment URL (origin): the resource the token is for. */
  resource: string;
  timeoutMs: number;
}

export type AuthFailureKind = 'auth' | 'unavailable' | 'config';

/** A token could not be had; `kind` says whether credentials (auth), Entra (unavailable) or the settings (config). */
export class AuthFailure extends Error {
  constructor(
    readonly kind: AuthFailureKind,
    message: string,
  ) {
    super(message);
    this.name = 'AuthFailure';
  }
}

/** MSAL's network module over axios, trusting `ca` (used only when a CA file is configured). */
export function caNetworkClient(ca: string, timeoutMs: number, http: AxiosInstance = axios.create()): INetworkModule {
  const agent = new https.Agent({ ca, keepAlive: true });
  const send = async <T>(
    method: 'GET' | 'POST',
    url: string,
    options?: NetworkRequestOptions,
  ): Promise<NetworkResponse<T>> => {
    const res = await http.request<string>({
      method,
      url,
      headers: options?.headers,
      data: method === 'POST' ? (options?.body ?? '') : undefined,
      httpsAgent: agent,
      timeout: timeoutMs,
      maxRedirects: 0,
      responseType: 'text',
      transformResponse: (x: unknown) => x,
      validateStatus: () => true,
    });
    let body: unknown;
    try {
      body = typeof res.data === 'string' && res.data.length > 0 ? JSON.parse(res.data) : {};
    } catch {
      body = {
        error: 'invalid_response',
        error_description: `non-JSON answer (HTTP ${res.status}) from the token endpoint`,
      };
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers ?? {}))
      if (v !== undefined && v !== null) headers[k.toLowerCase()] = String(v);
    return { status: res.status, headers, body: body as T };
  };
  return {
    sendGetRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => send<T>('GET', url, options),
    sendPostRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => send<T>('POST', url, options),
  };
}

/** The endpoints MSAL would otherwise discover, for an authority `<host>/<tenant>` (v2.0 endpoints). */
export function authorityMetadata(authority: string): { authorityMetadata: string; cloudDiscoveryMetadata: string } {
  const host = new URL(authority).host;
  return {
    authorityMetadata: JSON.stringify({
      token_endpoint: `${authority}/oauth2/v2.0/token`,
      authorization_endpoint: `${authority}/oauth2/v2.0/authorize`,
      end_session_endpoint: `${authority}/oauth2/v2.0/logout`,
      issuer: `${authority}/v2.0`,
      jwks_uri: `${authority}/discovery/v2.0/keys`,
    }),
    cloudDiscoveryMetadata: JSON.stringify({
      tenant_discovery_endpoint: `${authority}/v2.0/.well-known/openid-configuration`,
      'api-version': '1.1',
      metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
    }),
  };
}

interface MsalLikeError {
  name?: string;
  errorCode?: string;
  errorMessage?: string;
  status?: number;
  message?: string;
}

/** An MSAL failure, classified, with a message that names the AADSTS code but never a secret. */
export function classifyMsalError(e: unknown, redact: (s: string) => string): AuthFailure {
  const err = (e ?? {}) as MsalLikeError;
  const code = err.errorCode ?? '';
  const aadsts = /AADSTS\d+/.exec(err.errorMessage ?? err.message ?? '')?.[0];
  const detail = redact(
    `${code}${aadsts ? ` (${aadsts})` : ''}: ${(err.errorMessage ?? err.message ?? String(e)).split(/ Trace ID:| - Timestamp:/)[0]}`,
  ).slice(0, 400);
  if (err.name === 'ServerError') {
    if (err.status !== undefined && (err.status >= 500 || err.status === 429))
      return new AuthFailure(
        'unavailable',
        `Microsoft Entra ID token endpoint unavailable (HTTP ${err.status}) ${detail}`,
      );
    return new AuthFailure('auth', `Microsoft Entra ID refused the client credentials: ${detail}`);
  }
  if (err.name === 'ClientConfigurationError')
    return new AuthFailure('config', `Microsoft Entra ID settings rejected by MSAL: ${detail}`);
  // network_error, endpoints_resolution_error, timeouts, token parsing of a non-JSON answer
  return new AuthFailure('unavailable', `Microsoft Entra ID token request failed: ${detail}`);
}

export interface TokenSource {
  /** A valid access token (MSAL cache unless `fresh`). */
  get(fresh?: boolean): Promise<string>;
}

export function msalTokenSource(
  s: AuthSettings,
  registerSecret: (v: string) => void,
  redact: (v: string) => string,
): TokenSource {
  const authority = `${s.authorityHost.replace(/\/+$/, '')}/${encodeURIComponent(s.tenantId)}`;
  const meta = authorityMetadata(authority);
  const app = new ConfidentialClientApplication({
    auth: {
      clientId: s.clientId,
      clientSecret: s.clientSecret,
      authority,
      knownAuthorities: [new URL(authority).host],
      authorityMetadata: meta.authorityMetadata,
      cloudDiscoveryMetadata: meta.cloudDiscoveryMetadata,
    },
    system: {
      ...(s.ca ? { networkClient: caNetworkClient(s.ca, s.timeoutMs) } : {}),
      loggerOptions: { logLevel: LogLevel.Error, piiLoggingEnabled: false, loggerCallback: () => undefined },
    },
  });
  const scopes = [`${s.resource}/.default`];
  return {
    async get(fresh = false): Promise<string> {
      let result;
      try {
        result = await app.acquireTokenByClientCredential({ scopes, skipCache: fresh });
      } catch (e) {
        throw classifyMsalError(e, redact);
      }
      if (!result?.accessToken) throw new AuthFailure('auth', 'Microsoft Entra ID returned no access token');
      registerSecret(result.accessToken);
      return result.accessToken;
    },
  };
}
