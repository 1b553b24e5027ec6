/**
 * Commands with their own dependencies: `auth constant-contact`, `emulate`, `demo`.
 */
import { Command, Option } from 'commander';
import type { CommandHelpers } from './cli';
import { SOURCE_KV } from './engine';
import { systemClock } from './http/clock';
import { authorizeWithDeviceFlow, authorizeWithPkce } from './source/constant-contact/authorize';

interface GlobalOpts {
  config: string;
  json?: boolean;
  logFormat: 'text' | 'json';
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  progress: boolean;
}

export function register(program: Command, g: () => GlobalOpts, h: CommandHelpers): void {
  const auth = program.command('auth').description('obtain and store credentials');
  auth
    .command('constant-contact')
    .description('authorise Constant Contact once (authorization code + PKCE on a loopback redirect, or --device) and store the tokens')
    .option('--device', 'use the device flow (no browser on this machine)')
    .addOption(new Option('--port <n>', 'loopback redirect port (must match the redirect URI registered for the app)').argParser((v) => Number(v)))
    .action(async (o: { device?: boolean; port?: number }) =>
      h.withContext(g(), async (ctx) => {
        const cfg = { ...ctx.config.source, redirectPort: o.port ?? ctx.config.source.redirectPort };
        const deps = { clock: systemClock, logger: ctx.logger, kv: ctx.store.kv(SOURCE_KV) };
        const io = { print: (m: string) => h.out(m) };
        const r = o.device ? await authorizeWithDeviceFlow(cfg, deps, io) : await authorizeWithPkce(cfg, deps, io);
        h.out(
          `Constant Contact authorised; tokens stored in ${h.storePathFor(ctx.config)} (access token valid until ${r.expiresAt.toISOString()}` +
            `${r.refreshToken ? ', refresh token stored' : '; NO refresh token: add the offline_access scope to the app'}).`,
        );
        if (!r.refreshToken) throw new h.ExitError(1, '');
      }),
    );
}
