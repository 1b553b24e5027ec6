/** The fleet: leases with fencing, the shared Constant Contact budget and the fair schedule (see ./types). */
export * from './types';
export {
  createPgLeases,
  createPgBudget,
  migrateFleet,
  FLEET_MIGRATIONS,
  guardingLeases,
  checkBudgetConfig,
} from './postgres';
export type { FleetTime, PgFleetOptions } from './postgres';
export { createSqliteLeases, createSqliteBudget, migrateSqliteFleet, SQLITE_FLEET_MIGRATIONS } from './sqlite';
export * from './scheduler';
