/**
 * The shared Constant Contact budget's contract (see ./types for the whole fleet). Kept apart from the lease
 * types so that the Constant Contact client can import it without the PostgreSQL types the lease guard needs.
 */
export interface BudgetConfig {
  /** Requests per UTC day for the whole application (10,000 standard; partner keys more). */
  readonly dailyLimit: number;
  /** Per-second rate for the whole application; the slot spacing is 1000/perSecond ms (default 3.5). */
  readonly perSecond: number;
  /** Calls held back each day for token refreshes and reconciles (default 2% of dailyLimit). */
  readonly reserve?: number;
}

export interface BudgetGrant {
  /** When this call may be sent (on the clock the budget runs on: the database's, or the caller's). */
  readonly at: Date;
  /**
   * How long to wait from the moment of the grant (at - the budget's now, >= 0): sleep this long, so that a
   * worker whose clock disagrees with the database's still keeps the spacing.
   */
  readonly waitMs: number;
}

export interface BudgetState {
  readonly app: string;
  readonly day: string;
  readonly used: number;
  readonly limit: number;
  readonly spent: boolean;
  readonly perSecond: number;
  /** Calls held back for reserve({reserved: true}) (token refreshes, reconciles). */
  readonly reserve: number;
  /** Calls left today for ordinary reserve() (0 once spent): limit - reserve - used. */
  readonly remaining: number;
}

/** The budget of an application nobody configured: Constant Contact's standard key. */
export const DEFAULT_BUDGET: Required<BudgetConfig> = { dailyLimit: 10_000, perSecond: 3.5, reserve: 200 };

/** The reserve when a configuration names none: 2% of the daily limit. */
export function defaultReserve(dailyLimit: number): number {
  return Math.floor(dailyLimit * 0.02);
}

/** Thrown by reserve() when today's budget is gone (ledger full, or the vendor said quota_exceeded). */
export class SharedBudgetExhausted extends Error {
  constructor(
    readonly app: string,
    readonly day: string,
  ) {
    super(
      `Constant Contact application ${app}: today's request budget (${day} UTC) is spent; polling resumes at 00:00 UTC`,
    );
    this.name = 'SharedBudgetExhausted';
  }
}

export interface SharedBudget {
  /**
   * Reserve one call today (throws SharedBudgetExhausted when the ledger is full, or spent) and a per-second
   * slot. Resolves at once with the grant: the caller sleeps `waitMs` before sending. `reserved`: may use the
   * calls held back (token refreshes, reconciles). An application never configured gets DEFAULT_BUDGET.
   */
  reserve(app: string, now: Date, opts?: { reserved?: boolean }): Promise<BudgetGrant>;
  /** The token endpoint's own 1/s slot for `app` (no daily count); the caller sleeps `waitMs`. */
  tokenSlot(app: string, now: Date): Promise<BudgetGrant>;
  /** The vendor answered quota_exceeded: today is spent for every worker. */
  markSpent(app: string, now: Date): Promise<void>;
  state(app: string, now: Date): Promise<BudgetState>;
  configure(app: string, cfg: BudgetConfig): Promise<void>;
}
