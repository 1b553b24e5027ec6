/**
 * The status page: server-rendered HTML (no front-end framework, no script at all), served by fastify.
 *
 * Per target: the outbox (queued, due, oldest queued opt-out and its age), the parked rows with the CRM's reason
 * (paginated), and a requeue button per parked row and per target; the last runs; the lag from opt-out to CRM write
 * over time as an inline SVG chart; the audit export for download (the same text as `cc-optout audit`).
 *
 * Read-only by default. Requeueing needs the service token (`service.token`): either an `Authorization: Bearer`
 * header (scripts; answered with JSON), or the sign-in form, which sets an HttpOnly, SameSite=Strict session cookie
 * (an HMAC of the token with a per-process key, never the token itself). Every form POST also carries a CSRF token
 * derived the same way, and a POST whose Origin is another site is refused. An unauthorised POST gets 401 and
 * changes nothing; a requeue is recorded in the audit (origin `requeue`, a `requeued` event naming the status page).
 * Everything shown is escaped (emails and reasons are vendor text); a strict Content-Security-Policy allows no script.
 */
import * as crypto from 'crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StateStore, TargetStatus, ParkedRow, RunRecord, LagPoint } from '../store/types';
import { auditExport, durationSeconds, runLabel } from '../history';
import { redact } from '../log';

export interface StatusPageDeps {
  /** The opened state store (the service's own). */
  readonly store: StateStore;
  /** The configured targets (names, or the config's targets). */
  readonly targets: readonly (string | { readonly name: string })[];
  /** `service.token`: without one the page is read-only and every POST is refused (401). */
  readonly token?: string | null;
  /** Where the page lives (default `/status`). */
  readonly prefix?: string;
  /** Parked rows shown per target and page (default 20). */
  readonly parkedPageSize?: number;
  /** Runs shown (default 20). */
  readonly runsShown?: number;
  readonly now?: () => Date;
  /**
   * With a token, viewing needs it too (the page shows emails): an unauthorised visitor sees only the sign-in form
   * and the audit downloads answer 401. `cc-optout run` sets it, as its other routes (but the probes) need the
   * token. Without a token configured the page stays read-only for anyone who can reach it.
   */
  readonly privateView?: boolean;
}

const COOKIE = 'cc_optout_status';
const SESSION_HOURS = 12;

// ------------------------------------------------------------------------------------------- HTML escaping

/** Markup that is already safe (built by `html`). */
class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '`': '&#96;',
};

/** Text for HTML content and quoted attribute values. */
export function escapeHtml(v: unknown): string {
  return String(v).replace(/[&<>"'`]/g, (c) => ESCAPES[c]!);
}

function fragment(v: unknown): string {
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(fragment).join('');
  if (v === null || v === undefined || v === false) return '';
  return escapeHtml(v);
}

/** A template whose every interpolation is escaped, unless it is itself `html` (or a list of them). */
function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => (out += fragment(v) + strings[i + 1]!));
  return new Html(out);
}

// ------------------------------------------------------------------------------------------- formatting

export function humanDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function countsText(c: Partial<Record<string, number>>): string {
  const parts = Object.entries(c)
    .filter(([, n]) => (n ?? 0) > 0)
    .map(([k, n]) => `${k} ${n}`);
  return parts.length ? parts.join(', ') : 'none';
}

// ------------------------------------------------------------------------------------------- auth

function sha256(s: string): Buffer {
  return crypto.createHash('sha256').update(s, 'utf8').digest();
}

function sameSecret(a: string, b: string): boolean {
  return crypto.timingSafeEqual(sha256(a), sha256(b));
}

function cookies(req: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

interface Auth {
  /** A token is configured (requeue possible at all). */
  enabled: boolean;
  /** How this request is authorised, if it is. */
  via: 'bearer' | 'session' | null;
}

// ------------------------------------------------------------------------------------------- lag chart

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf'];
const Y_TICKS: [number, string][] = [
  [1, '1 s'],
  [10, '10 s'],
  [60, '1 min'],
  [600, '10 min'],
  [3600, '1 h'],
  [6 * 3600, '6 h'],
  [86400, '1 d'],
  [7 * 86400, '7 d'],
  [30 * 86400, '30 d'],
];

/** Lag (log scale) against write time, one colour per target; each point has a tooltip. */
export function lagChart(points: readonly LagPoint[], targets: readonly string[]): Html {
  const W = 760;
  const H = 260;
  const L = 64;
  const R = 16;
  const T = 16;
  const B = 40;
  if (points.length === 0) {
    return html`<svg id="lag-chart" role="img" aria-label="lag chart: no sync deliveries yet" width="${W}" height="80" viewBox="0 0 ${W} 80" xmlns="http://www.w3.org/2000/svg">
<text x="${W / 2}" y="44" text-anchor="middle" fill="#666">no CRM writes of synced opt-outs yet</text></svg>`;
  }
  const xs = points.map((p) => Date.parse(p.writtenAt));
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x1 - x0 < 60_000) {
    x0 -= 30_000;
    x1 += 30_000;
  }
  // a margin, so that the first and last points are not drawn on the frame
  const pad = (x1 - x0) * 0.03;
  x0 -= pad;
  x1 += pad;
  const ly = (s: number): number => Math.log10(Math.max(1, s));
  const maxLag = Math.max(...points.map((p) => p.lagSeconds), 60);
  const yTop = ly(maxLag) * 1.08;
  const px = (t: number): number => L + ((t - x0) / (x1 - x0)) * (W - L - R);
  const py = (s: number): number => T + (1 - ly(s) / yTop) * (H - T - B);
  const colour = (t: string): string => PALETTE[Math.max(0, targets.indexOf(t)) % PALETTE.length]!;
  const yTicks = Y_TICKS.filter(([s]) => ly(s) <= yTop);
  const xTicks = [x0, (x0 + x1) / 2, x1];
  const fmt = (t: number): string => new Date(t).toISOString().replace('T', ' ').slice(0, 16) + 'Z';
  const shownTargets = targets.filter((t) => points.some((p) => p.target === t));
  return html`<svg id="lag-chart" role="img" aria-label="lag from opt-out to CRM write over time" width="${W}" height="${H + 24}" viewBox="0 0 ${W} ${H + 24}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">
<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="#fafafa" stroke="#ccc"/>
${yTicks.map(([s, label]) => html`<line x1="${L}" x2="${W - R}" y1="${py(s).toFixed(1)}" y2="${py(s).toFixed(1)}" stroke="#e4e4e4"/><text x="${L - 6}" y="${(py(s) + 4).toFixed(1)}" text-anchor="end" fill="#444">${label}</text>`)}
${xTicks.map((t, i) => html`<text x="${px(t).toFixed(1)}" y="${H - B + 16}" text-anchor="${i === 0 ? 'start' : i === 2 ? 'end' : 'middle'}" fill="#444">${fmt(t)}</text>`)}
<text x="${L + (W - L - R) / 2}" y="${H - 6}" text-anchor="middle" fill="#444">CRM write time (UTC)</text>
<text transform="translate(14 ${T + (H - T - B) / 2}) rotate(-90)" text-anchor="middle" fill="#444">lag (log scale)</text>
${points.map(
  (p) =>
    html`<circle class="lag-point" cx="${px(Date.parse(p.writtenAt)).toFixed(1)}" cy="${py(p.lagSeconds).toFixed(1)}" r="3" fill="${colour(p.target)}" fill-opacity="0.7"><title>${p.target}: written ${p.writtenAt}, ${humanDuration(p.lagSeconds)} after the opt-out</title></circle>`,
)}
${shownTargets.map((t, i) => html`<circle cx="${L + 8 + i * 150}" cy="${H + 12}" r="5" fill="${colour(t)}"/><text x="${L + 18 + i * 150}" y="${H + 16}" fill="#222">${t}</text>`)}
</svg>`;
}

// ------------------------------------------------------------------------------------------- the page

const STYLE = `
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1100px}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1rem 0 .4rem}
table{border-collapse:collapse;width:100%;font-size:.9rem} th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} .num{text-align:right} .muted{color:#666} .reason{font-family:ui-monospace,monospace;font-size:.82rem;word-break:break-word}
.target{border:1px solid #ccc;border-radius:6px;padding:.6rem .9rem;margin:.8rem 0}
.stats span{display:inline-block;margin-right:1.4rem} .stats b{font-size:1.1rem}
.flash{background:#e8f5e9;border:1px solid #9c9;padding:.4rem .7rem} .warn{background:#fff4e5;border:1px solid #e9b96e;padding:.4rem .7rem}
.status-ok{color:#1b7f1b} .status-failed,.status-abandoned{color:#b00020;font-weight:bold} .status-incomplete,.status-interrupted{color:#a05a00} .status-running{color:#1f5fbf}
form.inline{display:inline} button{cursor:pointer} .auth{float:right;font-size:.9rem}
`;

function page(nonce: string, title: string, body: Html): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><title>${title}</title><style nonce="${nonce}">${new Html(STYLE)}</style></head>
<body>${body}</body></html>`.value;
}

interface PageState {
  auth: Auth;
  csrf: string;
  prefix: string;
  flash: string | null;
  error: string | null;
  now: Date;
  offsets: Record<string, number>;
}

async function targetSection(
  store: StateStore,
  st: TargetStatus,
  index: number,
  s: PageState,
  pageSize: number,
): Promise<Html> {
  const offset = Math.max(0, Math.min(s.offsets[st.target] ?? 0, Math.max(0, st.parked - 1)));
  const parked: ParkedRow[] = st.parked > 0 ? await store.parkedOutbox(st.target, pageSize, offset) : [];
  const canRequeue = s.auth.via !== null;
  const age = st.oldestQueuedOptOutAt
    ? humanDuration((s.now.getTime() - Date.parse(st.oldestQueuedOptOutAt)) / 1000)
    : null;
  const requeueForm = (email: string | null, label: string): Html =>
    html`<form class="inline requeue" method="post" action="${s.prefix}/requeue"><input type="hidden" name="target" value="${st.target}">${
      email !== null ? html`<input type="hidden" name="email" value="${email}">` : ''
    }<input type="hidden" name="csrf" value="${s.csrf}"><button type="submit">${label}</button></form>`;
  const link = (o: number, label: string): Html =>
    html`<a href="${s.prefix}?${new URLSearchParams({ target: st.target, offset: String(o) }).toString()}#target-${index}">${label}</a>`;
  const pager =
    st.parked > pageSize
      ? html`<p class="pager">showing ${offset + 1}–${offset + parked.length} of ${st.parked}
         ${offset > 0 ? link(Math.max(0, offset - pageSize), '← previous') : ''} ${offset + pageSize < st.parked ? link(offset + pageSize, 'next →') : ''}</p>`
      : '';
  return html`<section class="target" id="target-${index}" data-target="${st.target}">
<h3>${st.target}</h3>
<div class="stats">
<span>queued <b class="queued">${st.queued}</b> (due ${st.due})</span>
<span>oldest queued opt-out: <b class="oldest">${age ?? '—'}</b>${st.oldestQueuedOptOutAt ? html` <span class="muted">(${st.oldestQueuedOptOutAt})</span>` : ''}</span>
<span>parked <b class="parked">${st.parked}</b></span>
<span>delivered: ${countsText(st.done)}</span>
${st.lastDeliveredAt ? html`<span class="muted">last delivery ${st.lastDeliveredAt}</span>` : ''}
</div>
${
  st.parked > 0
    ? html`<h4>Parked (fix the cause, then requeue)${canRequeue ? html` ${requeueForm(null, `Requeue all ${st.parked} parked`)}` : ''}</h4>
<table class="parked-table"><thead><tr><th>email</th><th>reason</th><th>parked at</th><th class="num">attempts</th>${canRequeue ? html`<th></th>` : ''}</tr></thead><tbody>
${parked.map(
  (r) =>
    html`<tr class="parked-row" data-email="${r.email}"><td class="email">${r.email}</td><td class="reason">${r.reason ?? 'no reason given'}</td><td>${r.parkedAt ?? ''}</td><td class="num">${r.attempts}</td>${
      canRequeue ? html`<td>${requeueForm(r.email, 'Requeue')}</td>` : ''
    }</tr>`,
)}
</tbody></table>${pager}`
    : html`<p class="muted">nothing parked</p>`
}
</section>`;
}

function runsTable(runs: readonly RunRecord[]): Html {
  if (runs.length === 0) return html`<p class="muted" id="runs">no runs recorded yet</p>`;
  return html`<table id="runs"><thead><tr><th>#</th><th>kind</th><th>status</th><th>started</th><th class="num">duration</th><th>outcomes per target</th><th>API calls</th><th>error</th></tr></thead><tbody>
${runs.map((r) => {
  const d = durationSeconds(r);
  return html`<tr class="run" data-run="${r.id}"><td>${r.id}</td><td>${runLabel(r)}</td><td class="status-${r.status}">${r.status}${r.exitCode !== null ? ` (exit ${r.exitCode})` : ''}</td><td>${r.startedAt}</td><td class="num">${d === null ? '' : `${d.toFixed(1)} s`}</td>
<td>${Object.entries(r.counts).map(([t, c]) => html`<div>${t}: ${countsText(c)}</div>`)}</td><td>${countsText(r.apiCalls)}</td><td class="reason">${r.error ?? ''}</td></tr>`;
})}
</tbody></table>`;
}

function authBox(s: PageState): Html {
  if (!s.auth.enabled) return html`<div class="auth muted">read-only (no <code>service.token</code> configured)</div>`;
  if (s.auth.via === 'session') {
    return html`<div class="auth">signed in: requeue enabled <form class="inline" method="post" action="${s.prefix}/logout"><input type="hidden" name="csrf" value="${s.csrf}"><button type="submit">Sign out</button></form></div>`;
  }
  if (s.auth.via === 'bearer') return html`<div class="auth">authorised by bearer token</div>`;
  return html`<form class="auth" id="sign-in" method="post" action="${s.prefix}/login"><label>service token <input type="password" name="token" autocomplete="current-password" required></label> <button type="submit">Sign in to requeue</button></form>`;
}

async function renderStatusPage(
  deps: StatusPageDeps,
  names: readonly string[],
  s: PageState,
  nonce: string,
): Promise<string> {
  const { store } = deps;
  const statuses = await store.targetStatus(names, s.now);
  const runs = await store.recentRuns(deps.runsShown ?? 20, s.now);
  const lag = await store.lagPoints(2000);
  const sections: Html[] = [];
  for (const [i, st] of statuses.entries())
    sections.push(await targetSection(store, st, i, s, deps.parkedPageSize ?? 20));
  const p = s.prefix;
  const body = html`${authBox(s)}<h1>cc-optout status</h1>
<p class="muted">generated ${s.now.toISOString()} · read-only unless signed in</p>
${s.flash ? html`<p class="flash" role="status">${s.flash}</p>` : ''}${s.error ? html`<p class="warn" role="alert">${s.error}</p>` : ''}
<h2>Targets</h2>
${sections}
<h2>Last runs</h2>
${runsTable(runs)}
<h2>Lag from opt-out to CRM write</h2>
<p class="muted">first CRM write of each opt-out a sync queued (a backfill's lag is the opt-out's age, so it is left out); the newest ${lag.length}</p>
${lagChart(lag, names)}
<h2>Audit</h2>
<p id="audit-downloads">the same export as <code>cc-optout audit</code>: per record and target
<a href="${p}/audit.csv" download>CSV</a> · <a href="${p}/audit.json" download>JSON</a>; every delivery (<code>--history</code>)
<a href="${p}/audit.csv?history=1" download>CSV</a> · <a href="${p}/audit.json?history=1" download>JSON</a>. Add <code>?run=N</code> for one run.</p>`;
  return page(nonce, 'cc-optout status', body);
}

// ------------------------------------------------------------------------------------------- routes

/** Mount the status page on `app` at `deps.prefix` (default `/status`). */
export function registerStatusPage(app: FastifyInstance, deps: StatusPageDeps): void {
  const prefix = (deps.prefix ?? '/status').replace(/\/+$/, '');
  const names = deps.targets.map((t) => (typeof t === 'string' ? t : t.name));
  const token = deps.token && deps.token.length > 0 ? deps.token : null;
  const now = deps.now ?? (() => new Date());
  // a per-process key: sessions end when the service restarts, and the cookie is never the token itself
  const key = crypto.randomBytes(32);
  const derive = (purpose: string): string =>
    token ? crypto.createHmac('sha256', key).update(`${purpose}\0${token}`).digest('base64url') : '';
  const session = derive('session');
  const csrf = derive('csrf');

  const authOf = (req: FastifyRequest): Auth => {
    if (!token) return { enabled: false, via: null };
    const h = req.headers.authorization;
    if (typeof h === 'string' && /^Bearer\s+/i.test(h) && sameSecret(h.replace(/^Bearer\s+/i, ''), token))
      return { enabled: true, via: 'bearer' };
    const c = cookies(req)[COOKIE];
    if (c && sameSecret(c, session)) return { enabled: true, via: 'session' };
    return { enabled: true, via: null };
  };

  const mustSignIn = (a: Auth): boolean => deps.privateView === true && a.enabled && a.via === null;

  /** A POST from a browser session must come from this site and carry the CSRF token; a bearer header needs neither. */
  const postAuthorised = (req: FastifyRequest, body: Record<string, unknown>): boolean => {
    const a = authOf(req);
    if (a.via === 'bearer') return true;
    if (a.via !== 'session') return false;
    const origin = req.headers.origin;
    if (typeof origin === 'string' && origin !== 'null') {
      let host: string;
      try {
        host = new URL(origin).host;
      } catch {
        return false;
      }
      if (host !== req.headers.host) return false;
    }
    return typeof body.csrf === 'string' && sameSecret(body.csrf, csrf);
  };

  const secure = (reply: FastifyReply, nonce: string): FastifyReply =>
    reply
      .header(
        'content-security-policy',
        `default-src 'none'; style-src 'nonce-${nonce}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`,
      )
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('x-frame-options', 'DENY')
      .header('cache-control', 'no-store');

  const showPage = async (
    req: FastifyRequest,
    reply: FastifyReply,
    code: number,
    extra: { flash?: string | null; error?: string | null } = {},
  ): Promise<FastifyReply> => {
    const q = req.query as Record<string, string | undefined>;
    const offsets: Record<string, number> = {};
    if (q.target && names.includes(q.target) && /^\d{1,9}$/.test(q.offset ?? '')) offsets[q.target] = Number(q.offset);
    const requeued = /^\d{1,9}$/.test(q.requeued ?? '') ? Number(q.requeued) : null;
    const nonce = crypto.randomBytes(16).toString('base64');
    const state: PageState = {
      auth: authOf(req),
      csrf,
      prefix,
      now: now(),
      offsets,
      flash:
        extra.flash ??
        (requeued !== null ? `re-queued ${requeued} parked record(s); the next sync delivers them` : null),
      error: extra.error ?? null,
    };
    if (mustSignIn(state.auth)) {
      const body = html`${authBox(state)}<h1>cc-optout status</h1>
<p class="muted">sign in with the service token to see the outbox, parked records, runs and audit</p>
${state.error ? html`<p class="warn" role="alert">${state.error}</p>` : ''}`;
      return secure(reply, nonce)
        .code(401)
        .type('text/html; charset=utf-8')
        .send(page(nonce, 'cc-optout status', body));
    }
    return secure(reply, nonce)
      .code(code)
      .type('text/html; charset=utf-8')
      .send(await renderStatusPage(deps, names, state, nonce));
  };

  const bodyOf = (req: FastifyRequest): Record<string, unknown> =>
    req.body && typeof req.body === 'object' ? (req.body as Record<string, unknown>) : {};

  void app.register(async (scope) => {
    // HTML forms post application/x-www-form-urlencoded; parsed here only (this plugin's scope)
    scope.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: 16 * 1024 },
      (_req, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      },
    );

    scope.get(prefix, async (req, reply) => showPage(req, reply, 200));

    scope.post(`${prefix}/login`, async (req, reply) => {
      const body = bodyOf(req);
      if (!token) return showPage(req, reply, 401, { error: 'requeue is disabled: no service.token is configured' });
      if (typeof body.token !== 'string' || !sameSecret(body.token, token))
        return showPage(req, reply, 401, { error: 'wrong token' });
      const secureFlag = req.protocol === 'https' ? '; Secure' : '';
      return reply
        .header(
          'set-cookie',
          `${COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=${prefix}; Max-Age=${SESSION_HOURS * 3600}${secureFlag}`,
        )
        .redirect(prefix, 303);
    });

    scope.post(`${prefix}/logout`, async (req, reply) => {
      if (!postAuthorised(req, bodyOf(req))) return showPage(req, reply, 401, { error: 'not signed in' });
      return reply
        .header('set-cookie', `${COOKIE}=; HttpOnly; SameSite=Strict; Path=${prefix}; Max-Age=0`)
        .redirect(prefix, 303);
    });

    scope.post(`${prefix}/requeue`, async (req, reply) => {
      const body = bodyOf(req);
      const bearer = authOf(req).via === 'bearer';
      const refuse = (code: number, error: string): FastifyReply | Promise<FastifyReply> =>
        bearer || !String(req.headers.accept ?? '').includes('text/html')
          ? reply.code(code).send({ error })
          : showPage(req, reply, code, { error });
      if (!postAuthorised(req, body)) {
        return refuse(
          401,
          token
            ? 'not authorised: sign in with the service token (or send Authorization: Bearer <service.token>)'
            : 'requeue is disabled: no service.token is configured',
        );
      }
      const target = body.target;
      if (typeof target !== 'string' || !names.includes(target))
        return refuse(400, `target: expected one of ${names.join(', ')}, got ${JSON.stringify(target ?? null)}`);
      const email = body.email;
      if (email !== undefined && (typeof email !== 'string' || email === ''))
        return refuse(400, 'email: expected a parked email address');
      const n = await deps.store.requeueParkedRecords({
        target,
        emails: typeof email === 'string' ? [email] : null,
        now: now().toISOString(),
        via: 'status-page',
      });
      if (bearer) return reply.send({ requeued: n, target, ...(typeof email === 'string' ? { email } : {}) });
      return reply.redirect(`${prefix}?requeued=${n}`, 303);
    });

    for (const format of ['csv', 'json'] as const) {
      scope.get(`${prefix}/audit.${format}`, async (req, reply) => {
        if (mustSignIn(authOf(req)))
          return reply.code(401).send({
            error: 'not authorised: sign in with the service token (or send Authorization: Bearer <service.token>)',
          });
        const q = req.query as Record<string, string | undefined>;
        const history = q.history === '1' || q.history === 'true';
        let runId: number | null = null;
        if (q.run !== undefined) {
          if (!/^\d{1,15}$/.test(q.run) || !(await deps.store.getRun(Number(q.run))))
            return reply.code(400).send({ error: `run: no such run ${JSON.stringify(q.run)}` });
          runId = Number(q.run);
        }
        let since: string | null = null;
        if (q.since !== undefined) {
          const t = Date.parse(q.since);
          if (Number.isNaN(t))
            return reply
              .code(400)
              .send({ error: `since: expected a date such as 2024-06-01, got ${JSON.stringify(q.since)}` });
          since = new Date(t).toISOString();
        }
        const { text } = await auditExport(deps.store, { format, since, history, runId });
        const name = `cc-optout-audit${history ? '-history' : ''}${runId !== null ? `-run-${runId}` : ''}.${format}`;
        return reply
          .header('cache-control', 'no-store')
          .header('x-content-type-options', 'nosniff')
          .header('content-disposition', `attachment; filename="${name}"`)
          .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/json; charset=utf-8')
          .send(redact(text));
      });
    }
  });
}
