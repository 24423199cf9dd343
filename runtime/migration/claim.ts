// Migration claims at the balancer (native/dev/lbsteer.h cpb_lb_claim, dev.h cpb_mem_claim): the first
// claim of (flow, token) wins, so exactly one of a migration's two runtimes owns the flow (MigratorOptions.claim).
import { errnoNumber } from '../errors.js';

export type ClaimResult = 'won' | 'lost' | 'none';

const EEXIST = errnoNumber('EEXIST');

/**
 * A migration's claim token at the balancer (52 bits, never 0): the source's name, its epoch and the id.
 * The arbiter compares all of it: a flow moved thousands of times leaves as many claims behind, and with
 * fewer bits a new migration could meet an old one's claim and be decided by it.
 */
export function claimToken(source: string, epoch: number, migrationId: number): number {
  let lo = 0x811c9dc5;
  let hi = 0x01000193;
  for (const c of Buffer.from(`${source}/${epoch}/${migrationId}`)) {
    lo = Math.imul(lo ^ c, 0x01000193) >>> 0;
    hi = Math.imul(hi ^ c ^ (lo >>> 24), 0x5bd1e995) >>> 0;
  }
  return (hi & 0xfffff) * 2 ** 32 + (lo | 1);
}

/**
 * What a binding's claim call ([rc, holder]) means for the backend `mine` that asked: claimed now (0) or
 * held by it already is 'won', held by another 'lost', any other failure 'none' (no arbiter to go by).
 */
export function claimOutcome([rc, holder]: readonly [number, number], mine: number): ClaimResult {
  if (rc === 0) return 'won';
  if (rc !== -EEXIST) return 'none';
  return holder === mine ? 'won' : 'lost';
}
