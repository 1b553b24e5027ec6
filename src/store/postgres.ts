/**
 * Placeholder: the PostgreSQL StoreBackend is built on branch h/pgstore, which replaces this file.
 */
import type { StoreBackend } from './backend';
import { maskUrl } from './pg/url';

export async function openPgBackend(url: string): Promise<StoreBackend> {
  throw new Error(`the PostgreSQL state store is not built yet (${maskUrl(url)})`);
}
