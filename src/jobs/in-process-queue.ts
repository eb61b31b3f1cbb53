// The embedded job queue: timers in this process, nothing persisted. Jobs are wake-ups for work
// the database holds (outbox rows), and services re-enqueue what is pending when they start, so
// losing the queue with the process loses nothing.
import type { Logger } from 'pino';
import { defaultRetryPolicy, retryDelay, type AddJobOptions, type JobDataMap, type JobHandler, type JobName, type JobQueue, type ProcessOptions, type RetryPolicy } from './queue.js';

interface Job {
  seq: number;
  jobId?: string;
  data: unknown;
  runAt: number;
  attemptsMade: number;
}

interface Lane {
  name: string;
  handler: ((data: unknown) => Promise<void>) | null;
  concurrency: number;
  active: number;
  /** Waiting and delayed jobs, ordered by (runAt, seq). */
  pending: Job[];
  /** jobId → its waiting or delayed job. */
  byJobId: Map<string, Job>;
  /** jobIds running now. */
  running: Set<string>;
  /** jobId → the follow-up run requested while it was running. */
  next: Map<string, Job>;
  timer: NodeJS.Timeout | null;
  timerAt: number;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

export interface InProcessQueueOptions extends Partial<RetryPolicy> {
  /** How long close() waits for running jobs (default 10 s). */
  closeTimeoutMs?: number;
}

export class InProcessJobQueue implements JobQueue {
  private readonly lanes = new Map<string, Lane>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly policy: RetryPolicy;
  private readonly closeTimeoutMs: number;
  private seq = 0;
  private closed = false;

  constructor(private readonly logger: Logger, opts: InProcessQueueOptions = {}) {
    this.policy = { ...defaultRetryPolicy, ...stripUndefined({ attempts: opts.attempts, backoffMs: opts.backoffMs, maxBackoffMs: opts.maxBackoffMs }) };
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 10_000;
  }

  async add<N extends JobName>(name: N, data: JobDataMap[N], opts: AddJobOptions = {}): Promise<void> {
    if (this.closed) return; // shutting down: the database still holds the work
    this.enqueue(this.lane(name), { seq: this.seq++, jobId: opts.jobId, data, runAt: Date.now() + Math.max(0, opts.delayMs ?? 0), attemptsMade: 0 });
  }

  process<N extends JobName>(name: N, handler: JobHandler<N>, opts: ProcessOptions = {}): void {
    const lane = this.lane(name);
    if (lane.handler) throw new Error(`a processor for ${name} is already registered`);
    lane.handler = handler as (data: unknown) => Promise<void>;
    lane.concurrency = Math.max(1, opts.concurrency ?? 1);
    this.pump(lane);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const lane of this.lanes.values()) {
      if (lane.timer) clearTimeout(lane.timer);
      lane.timer = null;
      lane.pending = [];
      lane.byJobId.clear();
      lane.next.clear();
    }
    if (!this.inflight.size) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), this.closeTimeoutMs); });
    const r = await Promise.race([Promise.allSettled([...this.inflight]).then(() => 'done' as const), timeout]);
    clearTimeout(timer);
    if (r === 'timeout') this.logger.warn({ running: this.inflight.size }, 'job queue closed with jobs still running');
  }

  /** Jobs waiting, delayed or running (for tests and metrics). */
  counts(name: JobName): { pending: number; active: number } {
    const lane = this.lanes.get(name);
    return { pending: (lane?.pending.length ?? 0) + (lane?.next.size ?? 0), active: lane?.active ?? 0 };
  }

  private lane(name: string): Lane {
    let lane = this.lanes.get(name);
    if (!lane) {
      lane = { name, handler: null, concurrency: 1, active: 0, pending: [], byJobId: new Map(), running: new Set(), next: new Map(), timer: null, timerAt: 0 };
      this.lanes.set(name, lane);
    }
    return lane;
  }

  private enqueue(lane: Lane, job: Job): void {
    if (job.jobId !== undefined) {
      if (lane.running.has(job.jobId)) {
        // Keep one follow-up (the latest), started when the running one finishes.
        lane.next.set(job.jobId, job);
        return;
      }
      const existing = lane.byJobId.get(job.jobId);
      if (existing) {
        if (job.runAt < existing.runAt) {
          lane.pending.splice(lane.pending.indexOf(existing), 1);
          existing.runAt = job.runAt;
          insertSorted(lane.pending, existing);
          this.pump(lane);
        }
        return;
      }
      lane.byJobId.set(job.jobId, job);
    }
    insertSorted(lane.pending, job);
    this.pump(lane);
  }

  private pump(lane: Lane): void {
    if (this.closed || !lane.handler) return;
    const now = Date.now();
    while (lane.active < lane.concurrency && lane.pending.length && lane.pending[0].runAt <= now) {
      const job = lane.pending.shift()!;
      if (job.jobId !== undefined) {
        lane.byJobId.delete(job.jobId);
        lane.running.add(job.jobId);
      }
      this.run(lane, job);
    }
    // Sleep until the earliest delayed job (a finishing job pumps again when we are at capacity).
    const head = lane.pending[0];
    if (!head || lane.active >= lane.concurrency) return;
    if (lane.timer && lane.timerAt <= head.runAt) return;
    if (lane.timer) clearTimeout(lane.timer);
    lane.timerAt = head.runAt;
    lane.timer = setTimeout(() => {
      lane.timer = null;
      this.pump(lane);
    }, Math.min(MAX_TIMER_MS, Math.max(0, head.runAt - now)));
    lane.timer.unref();
  }

  private run(lane: Lane, job: Job): void {
    lane.active++;
    const p = (async () => {
      let failed: unknown = null;
      try {
        await lane.handler!(job.data);
      } catch (err) {
        failed = err ?? new Error('job failed');
      }
      lane.active--;
      if (job.jobId !== undefined) lane.running.delete(job.jobId);
      if (this.closed) return;
      if (failed) {
        const attemptsMade = job.attemptsMade + 1;
        if (attemptsMade < this.policy.attempts) {
          const delay = retryDelay(this.policy, attemptsMade);
          this.logger.warn({ queue: lane.name, jobId: job.jobId, attempt: attemptsMade, retryInMs: delay, err: errText(failed) }, 'job failed; retrying');
          this.enqueue(lane, { ...job, seq: this.seq++, attemptsMade, runAt: Date.now() + delay });
        } else {
          this.logger.error({ queue: lane.name, jobId: job.jobId, attempts: attemptsMade, err: errText(failed) }, 'job failed; giving up');
        }
      }
      if (job.jobId !== undefined) {
        const follow = lane.next.get(job.jobId);
        if (follow) {
          lane.next.delete(job.jobId);
          this.enqueue(lane, follow);
        }
      }
      this.pump(lane);
    })();
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }
}

function insertSorted(list: Job[], job: Job): void {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const m = list[mid];
    if (m.runAt < job.runAt || (m.runAt === job.runAt && m.seq < job.seq)) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, job);
}

function errText(err: unknown): string {
  return err instanceof Error ? err.stack ?? err.message : String(err);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
