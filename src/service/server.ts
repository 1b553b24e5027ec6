/**
 * The HTTP side of `cc-optout run` (fastify): `/healthz` (the process is alive), `/readyz` (store open, last run
 * not fatal, credentials valid as the last run saw them; 503 with the reasons otherwise) and `/metrics`
 * (Prometheus text format). With `service.token` set, every route except /healthz and /readyz needs
 * `Authorization: Bearer <token>` (compared in constant time; the token is never logged). The status page
 * (src/service/page.ts) mounts on the instance `createServiceServer` returns.
 */
import { createHash, timingSafeEqual } from 'crypto';
import Fastify, { FastifyInstance } from 'fastify';
import { Logger } from '../log';

/** Routes open without the token: the probes of a service manager or an orchestrator, and `/` (a redirect to the status page's sign-in). */
export const OPEN_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/']);
/** Where `cc-optout run` mounts the status page (src/service/page.ts), which does its own authorisation. */
export const STATUS_PREFIX = '/status';

/**
 * Does the `Authorization` header carry the token? Both sides are hashed first, so the comparison takes the
 * same time whatever the length or the content of what was sent.
 */
export function bearerMatches(header: string | string[] | undefined, token: string): boolean {
  const value = Array.isArray(header) ? header[0] : header;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(value ?? '');
  const given = createHash('sha256')
    .update(m ? m[1]! : '')
    .digest();
  const wanted = createHash('sha256').update(token).digest();
  // evaluated in full before combining: no early exit on a missing header
  const same = timingSafeEqual(given, wanted);
  return m !== null && same;
}

export interface Readiness {
  ready: boolean;
  /** Why not ready (empty when ready). */
  reasons: string[];
  /** Extra facts for people (last run, next run). */
  [key: string]: unknown;
}

/**
 * The hostname of a `Host` header (`name`, `name:port`, `[v6]`, `[v6]:port`), lower case, brackets kept for
 * IPv6; '' when absent or unreadable.
 */
export function hostHeaderName(header: string | undefined): string {
  const h = (header ?? '').trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end > 0 ? h.slice(0, end + 1) : '';
  }
  return h.replace(/:\d*$/, '');
}

/** Host names a request may name when no token is configured: loopback, and the configured listen host. */
export function allowedHostNames(listenHost: string | undefined, extra: readonly string[] = []): Set<string> {
  const out = new Set(['127.0.0.1', 'localhost', '[::1]', ...extra.map((h) => h.toLowerCase())]);
  if (listenHost) {
    const h = listenHost.toLowerCase();
    out.add(h.includes(':') && !h.startsWith('[') ? `[${h}]` : h);
  }
  return out;
}

export interface ServiceServerDeps {
  /** null: no token (loopback only; the config refuses a non-loopback address without one). */
  token: string | null;
  readiness: () => Readiness | Promise<Readiness>;
  metrics: () => Promise<string>;
  metricsContentType: string;
  logger: Logger;
  /** The configured listen host: without a token, a request must name it (or a loopback name) as its Host. */
  listenHost?: string;
  /** `service.allowedHosts`: more `Host` names served without a token. */
  allowedHosts?: readonly string[];
}

export function createServiceServer(deps: ServiceServerDeps): FastifyInstance {
  // fastify's own logger stays off: request logs would need their own redaction, and the service logs its runs
  const app = Fastify({ logger: false, trustProxy: false });
  const hosts = allowedHostNames(deps.listenHost, deps.allowedHosts);
  app.addHook('onRequest', async (req, reply) => {
    const route = req.url.split('?')[0] ?? '';
    if (deps.token === null) {
      // DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 sends its own Host name
      if (route === '/healthz' || hosts.has(hostHeaderName(req.headers.host))) return;
      await reply.code(421).send({
        error:
          'misdirected request: without service.token only a loopback Host (127.0.0.1, localhost, [::1]) or the listen host (or service.allowedHosts) is served',
      });
      return reply;
    }
    if (OPEN_ROUTES.has(route)) return;
    // the status page checks the token itself (a browser signs in once and carries a session cookie)
    if (route === STATUS_PREFIX || route.startsWith(`${STATUS_PREFIX}/`)) return;
    if (!bearerMatches(req.headers.authorization, deps.token)) {
      await reply
        .code(401)
        .header('www-authenticate', 'Bearer realm="cc-optout"')
        .send({ error: 'unauthorized: send Authorization: Bearer <service.token>' });
    }
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/', async (_req, reply) => reply.redirect(STATUS_PREFIX, 302));
  app.get('/readyz', async (req, reply) => {
    let r: Readiness;
    try {
      r = await deps.readiness();
    } catch (err) {
      r = { ready: false, reasons: [`readiness check failed: ${(err as Error).message}`] };
    }
    const status = r.ready ? 'ready' : 'not ready';
    // open to probes: with a token, the reasons (vendor messages, host, runs) only with the bearer token
    if (deps.token !== null && !bearerMatches(req.headers.authorization, deps.token))
      return reply.code(r.ready ? 200 : 503).send({ status, ready: r.ready });
    return reply.code(r.ready ? 200 : 503).send({ status, ...r });
  });
  app.get('/metrics', async (_req, reply) => {
    const text = await deps.metrics();
    return reply.header('content-type', deps.metricsContentType).send(text);
  });
  app.setErrorHandler((err, _req, reply) => {
    deps.logger.warn('service: HTTP handler failed', { error: (err as Error).message });
    void reply.code(500).send({ error: 'internal error' });
  });
  return app;
}
