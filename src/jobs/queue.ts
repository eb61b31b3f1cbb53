// Background jobs: the interface producers and processors share. Two implementations: in-process
// (the embedded default, timers) and BullMQ (when redis.url is set, shared by every process).
//
// A queue only wakes and retries work: the database is the source of truth (outbox rows), so every
// handler must be idempotent: run twice, or run with nothing to do, it must do no harm.

/** Queue name → job data. Add an entry here for a new queue (names from STYLE.md). */
export interface JobDataMap {
  /** Drain one destination's federation outbox (src/federation/sender.ts). */
  'federation-send': { destination: string };
  'push-deliver': Record<string, unknown>;
  'media-thumbnail': Record<string, unknown>;
}

export type JobName = keyof JobDataMap;

export interface AddJobOptions {
  /** Run no sooner than this many milliseconds from now. */
  delayMs?: number;
  /**
   * Deduplication key. While a job with this key is waiting or delayed, adding another one does
   * not create a second job; a sooner run time brings the existing job forward. While it is
   * running, one follow-up run is kept, which starts after it finishes (so two jobs with the same
   * key never run at once, and a wake-up that arrives mid-run is not lost). Callers give the same
   * data for the same key.
   */
  jobId?: string;
}

export interface ProcessOptions {
  /** Jobs of this queue run at once in this process (default 1). */
  concurrency?: number;
}

export type JobHandler<N extends JobName> = (data: JobDataMap[N]) => Promise<void>;

export interface JobQueue {
  /** Producer side: enqueue (or dedupe) a job. Resolves once the job is stored. */
  add<N extends JobName>(name: N, data: JobDataMap[N], opts?: AddJobOptions): Promise<void>;
  /**
   * Processor side: run `handler` for jobs of `name`. A handler that throws is retried with
   * exponential backoff up to the queue's attempt limit, then logged and dropped.
   */
  process<N extends JobName>(name: N, handler: JobHandler<N>, opts?: ProcessOptions): void;
  /** Stops taking jobs, waits (bounded) for running ones, releases connections. */
  close(): Promise<void>;
}

export interface RetryPolicy {
  /** Total runs of a failing job, the first included (default 5). */
  attempts: number;
  /** Delay before the first retry; doubles each time (default 1 s). */
  backoffMs: number;
  /** Longest delay between retries (default 5 min). */
  maxBackoffMs: number;
}

export const defaultRetryPolicy: RetryPolicy = { attempts: 5, backoffMs: 1000, maxBackoffMs: 300_000 };

/** The delay before retry number `attemptsMade` (1 = the first retry). */
export function retryDelay(policy: RetryPolicy, attemptsMade: number): number {
  return Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** Math.max(0, attemptsMade - 1));
}
