/**
 * `cc-optout run` in fleet mode (many accounts, see src/fleet): N FleetWorkers in this process, sharing the
 * store's leases with every other instance on the same PostgreSQL, and the HTTP side of the service
 * (`/healthz`, `/readyz`, `/metrics`).
 *
 * - Each worker claims due leases (an account's Constant Contact polling, or one target's outbox of one account),
 *   renews them every ttl/3 and gives them back with the time they are due again (the fair scheduler).
 * - SIGTERM/SIGINT (`stop()`): claim nothing more, the work in hand stops after its batch or page, every lease held
 *   is released due NOW, so another instance takes it over at once (handover), then the HTTP server closes.
 * - A process killed outright holds its leases until they expire (`--lease-ttl`): any other instance takes them
 *   over then.
 */
import * as os from 'os';
import { FastifyInstance } from 'fastify';
import { Counter, Gauge, Registry as PromRegistry } from 'prom-client';
import { ResolvedService } from '../config';
import { FleetWorker, FleetWorkerOptions } from '../fleet/worker';
import { Logger, redact } from '../log';
import { Readiness, createServiceServer } from './server';

export interface FleetRunnerOptions {
  readonly service: ResolvedService;
  readonly logger: Logger;
  /** Workers in this process (each its own owner id). */
  readonly workers: number;
  /** Everything a worker needs but its logger (one set shared by the workers). */
  readonly worker: Omit<FleetWorkerOptions, 'logger' | 'owner'>;
  /** Called after the workers stopped (close the fleet tables and the backend). */
  readonly close?: () => Promise<void>;
  /** /readyz: how long the store may take to answer (default 3 s). */
  readonly storeProbeMs?: number;
}

export class FleetRunner {
  readonly workers: FleetWorker[];
  readonly server: FastifyInstance;
  private readonly registry = new PromRegistry();
  private stopping: Promise<void> | null = null;
  private started = false;
  private readonly log: Logger;

  constructor(private readonly o: FleetRunnerOptions) {
    this.log = o.logger.child({ component: 'service' });
    this.workers = Array.from(
      { length: Math.max(1, o.workers) },
      () => new FleetWorker({ ...o.worker, logger: o.logger }),
    );
    const workers = this.workers;
    new Gauge({
      name: 'cc_optout_fleet_leases_held',
      help: 'Leases held by the workers of this process right now',
      registers: [this.registry],
      collect(this: Gauge): void {
        this.set(workers.reduce((a, w) => a + w.held().length, 0));
      },
    });
    const counter = (name: string, help: string, key: keyof FleetWorker['counts']): void => {
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect(this: Counter): void {
          this.reset();
          this.inc(workers.reduce((a, w) => a + w.counts[key], 0));
        },
      });
    };
    counter('cc_optout_fleet_claims_total', 'Leases claimed by this process', 'claimed');
    counter('cc_optout_fleet_polls_total', 'Constant Contact polls (detection) run by this process', 'polls');
    counter('cc_optout_fleet_deliveries_total', 'Deliver-only runs (one target of one account)', 'deliveries');
    counter('cc_optout_fleet_failures_total', 'Leases whose work failed (the account backs off)', 'failures');
    counter('cc_optout_fleet_leases_lost_total', 'Leases taken over while this process worked on them', 'lost');
    counter('cc_optout_fleet_handovers_total', 'Leases handed back due now on a stop (SIGTERM)', 'handedOver');
    this.server = createServiceServer({
      token: o.service.token,
      readiness: () => this.readiness(),
      metrics: () => this.registry.metrics(),
      metricsContentType: this.registry.contentType,
      logger: this.log,
      listenHost: o.service.listen.host,
      allowedHosts: o.service.allowedHosts ?? [],
    });
  }

  listenAddress(): { host: string; port: number } {
    return this.o.service.listen;
  }

  /**
   * Ready: started, not stopping, the store answers (within storeProbeMs) and no account's Constant Contact
   * credentials were refused (cleared by its next successful poll), as the single-account runner's /readyz.
   */
  async readiness(): Promise<Readiness> {
    const reasons: string[] = [];
    if (this.stopping) reasons.push('shutting down');
    if (!this.started) reasons.push('starting');
    const probeMs = this.o.storeProbeMs ?? 3000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.o.worker.backend.listAccounts(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${probeMs} ms`)), probeMs);
        }),
      ]);
    } catch (err) {
      reasons.push(`store unreachable: ${redact((err as Error).message ?? String(err))}`);
    } finally {
      clearTimeout(timer);
    }
    const refused = new Map<string, string>();
    for (const w of this.workers) for (const [id, msg] of w.refused) refused.set(id, msg);
    for (const [id, msg] of [...refused].sort(([a], [b]) => a.localeCompare(b)))
      reasons.push(
        `account ${id}: credentials refused: ${msg} (run \`cc-optout --account ${id} auth constant-contact\`)`,
      );
    return {
      ready: reasons.length === 0,
      reasons,
      host: os.hostname(),
      mode: 'fleet',
      workers: this.workers.map((w) => ({ owner: w.owner, held: w.held(), ...w.counts })),
    };
  }

  async start(): Promise<string> {
    const { host, port } = this.o.service.listen;
    const address = await this.server.listen({ host, port });
    if (this.stopping) return address;
    for (const w of this.workers) w.start();
    this.started = true;
    this.log.info('service listening (fleet mode)', {
      address,
      workers: this.workers.length,
      concurrency: this.o.worker.concurrency ?? 2,
      leaseTtlMs: this.o.worker.ttlMs ?? 30_000,
      owners: this.workers.map((w) => w.owner),
      auth: this.o.service.token ? 'bearer token' : 'none (loopback only)',
    });
    return address;
  }

  /** Stop claiming, let the work in hand stop after its batch, hand every lease back due now. Idempotent. */
  stop(reason: NodeJS.Signals | 'stop' = 'stop'): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      await Promise.all(this.workers.map((w) => w.stop(reason)));
      const handedOver = this.workers.reduce((a, w) => a + w.counts.handedOver, 0);
      await this.server.close();
      try {
        await this.o.close?.();
      } finally {
        this.log.info('service stopped', { reason, handedOver });
      }
    })();
    return this.stopping;
  }
}
