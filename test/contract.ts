/**
 * Test helpers over the SDK contract: a deliver call as one value (outcomes plus the halt that stopped the
 * batch, if any), whatever way the target said it, so tests can assert on both at once.
 */
import * as E from 'fp-ts/Either';
import { CheckReport, DeliveryMode, HaltInfo, OptOut, Outcome, Target, isTargetHalt } from '../src/sdk';

/** What one deliver call did: its outcomes and, when it stopped part-way (a TargetHalt with outcomes), why. */
export interface DeliveryResult {
  readonly outcomes: readonly Outcome[];
  readonly halt?: HaltInfo;
}

export function haltInfo(e: { kind: HaltInfo['kind']; message: string; retryAt?: string }): HaltInfo {
  return { kind: e.kind, message: e.message, ...(e.retryAt !== undefined ? { retryAt: e.retryAt } : {}) };
}

/** Deliver; a halt that settled outcomes is returned with them; a halt with nothing done throws (see deliverHalt). */
export async function deliverResult(
  target: Target,
  batch: readonly OptOut[],
  mode: DeliveryMode = 'apply',
): Promise<DeliveryResult> {
  try {
    return await target.deliver(batch, mode);
  } catch (e) {
    if (isTargetHalt(e) && e.outcomes && e.outcomes.length > 0) return { outcomes: e.outcomes, halt: haltInfo(e) };
    if (isTargetHalt(e)) throw new Error(`deliver halted with nothing done: ${e.kind}: ${e.message}`);
    throw e;
  }
}

/** Deliver, expecting a halt with nothing done (the whole batch deferred); returns the halt. */
export async function deliverHalt(
  target: Target,
  batch: readonly OptOut[],
  mode: DeliveryMode = 'apply',
): Promise<HaltInfo> {
  let r: unknown;
  try {
    r = await target.deliver(batch, mode);
  } catch (e) {
    if (isTargetHalt(e) && !(e.outcomes && e.outcomes.length > 0)) return haltInfo(e);
    if (isTargetHalt(e))
      throw new Error(`deliver halted after settling ${e.outcomes!.length} outcomes: ${e.kind}: ${e.message}`);
    throw e;
  }
  throw new Error(`deliver returned a report: ${JSON.stringify(r)}`);
}

/** Either way a deliver call ended, as an Either: Right a report (with `halt` when stopped part-way), Left a halt with nothing done. */
export async function deliverEither(
  target: Target,
  batch: readonly OptOut[],
  mode: DeliveryMode = 'apply',
): Promise<E.Either<HaltInfo, DeliveryResult>> {
  try {
    return E.right(await target.deliver(batch, mode));
  } catch (e) {
    if (!isTargetHalt(e)) throw e;
    if (e.outcomes && e.outcomes.length > 0) return E.right({ outcomes: e.outcomes, halt: haltInfo(e) });
    return E.left(haltInfo(e));
  }
}

/** A check as an Either: Right the report, Left the halt it threw. */
export async function checkEither(target: Target): Promise<E.Either<HaltInfo, CheckReport>> {
  try {
    return E.right(await target.check());
  } catch (e) {
    if (!isTargetHalt(e)) throw e;
    return E.left(haltInfo(e));
  }
}
