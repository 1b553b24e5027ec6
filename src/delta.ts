/**
 * The pure delta between what the store knows and what the source observed.
 *   (known, observed) -> { added, resubscribed, unchanged }
 * - added: observed opted out (permission_to_send = unsubscribed, deleted or not) and not known as an active
 *   opt-out: new, or back after having left the unsubscribed set.
 * - resubscribed: known active opt-outs observed with another permission_to_send. (After a full scan of the
 *   unsubscribed set, `missingFromFullScan` finds the ones not observed at all.) Reported, never propagated.
 * - unchanged: observed opt-outs already known as active.
 * Duplicate observations of one email (overlapping windows, repeated pages) collapse to one.
 */
import { ObservedContact, OptOut, isOptedOut, toOptOut } from './domain';

export interface KnownState {
  readonly state: 'active' | 'left';
}

export interface Delta {
  readonly added: OptOut[];
  readonly resubscribed: ObservedContact[];
  readonly unchanged: string[];
}

export function computeDelta(
  known: ReadonlyMap<string, KnownState>,
  observed: readonly ObservedContact[],
  fallbackAt: string,
): Delta {
  const added = new Map<string, OptOut>();
  const resubscribed = new Map<string, ObservedContact>();
  const unchanged = new Set<string>();
  for (const c of observed) {
    const k = known.get(c.email);
    if (isOptedOut(c)) {
      if (k && k.state === 'active') unchanged.add(c.email);
      else if (!added.has(c.email)) added.set(c.email, toOptOut(c, fallbackAt));
    } else if (k && k.state === 'active' && !added.has(c.email)) {
      resubscribed.set(c.email, c);
    }
  }
  // an email observed both opted out and not (two CC contacts, or a page overlap): opted out wins
  for (const email of added.keys()) resubscribed.delete(email);
  for (const email of unchanged) resubscribed.delete(email);
  return { added: [...added.values()], resubscribed: [...resubscribed.values()], unchanged: [...unchanged] };
}

/**
 * After a full scan of the unsubscribed set: which known active opt-outs were not seen at all.
 * (They left the set: resubscribed, or, where CC drops deleted contacts from the set, deleted.)
 */
export function missingFromFullScan(knownActive: ReadonlySet<string>, seen: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const email of knownActive) if (!seen.has(email)) out.push(email);
  return out.sort();
}
