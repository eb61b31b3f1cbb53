// Jobs in Redis through BullMQ, used when redis.url is set: every process sharing the database
// shares the queues, delayed retries survive a restart, and a job a crashed process was running is
// picked up again (BullMQ's stalled-job check). Producers (Queue) and processors (Worker) are kept
// apart: add() only ever touches a Queue, process() only creates a Worker.
import { Queue, Worker, type ConnectionOptions, type JobsOptions } from 'bullmq';
import type { Logger } from 'pino';
import { defaultRetryPolicy, retryDelay, type AddJobOptions, type JobDataMap, type JobHandler, type JobName, type JobQueue, type ProcessOptions, type RetryPolicy } from './queue.js';

export interface BullMqQueueOptions extends Partial<RetryPolicy> {
  url: string;
  /**
   * Namespaces every Redis key, so that deployments (or test servers) sharing one Redis do not
   * take each other's jobs. Processes that share a database must use the same prefix.
   */
  prefix: string;
  /** How long close() waits for running jobs before abandoning them to the stalled check (default 10 s). */
  closeTimeoutMs?: number;
}

/** The custom backoff type: exponential, capped by the retry policy. */
const BACKOFF_TYPE = 'lattice-capped';

export class BullMqJobQueue implements JobQueue {
  private readonly producers = new Map<string, Queue>();
  private readonly workers = new Map<string, Worker>();
  private readonly connection: ConnectionOptions;
  private readonly policy: RetryPolicy;
  private closed = false;

  constructor(private readonly opts: BullMqQueueOptions, private readonly logger: Logger) {
    // maxRetriesPerRequest: null is what BullMQ requires for its blocking connections.
    this.connection = { url: opts.url, maxRetriesPerRequest: null };
    this.policy = {
      attempts: opts.attempts ?? defaultRetryPolicy.attempts,
      backoffMs: opts.backoffMs ?? defaultRetryPolicy.backoffMs,
      maxBackoffMs: opts.maxBackoffMs ?? defaultRetryPolicy.maxBackoffMs,
    };
  }

  private producer(name: string): Queue {
    let q = this.producers.get(name);
    if (!q) {
      q = new Queue(name, {
        connection: this.connection,
        prefix: this.opts.prefix,
        streams: { events: { maxLen: 1000 } },
      });
      q.on('error', (err: Error) => this.logger.warn({ queue: name, err: err.message }, 'job queue (redis) error'));
      this.producers.set(name, q);
    }
    return q;
  }

  async add<N extends JobName>(name: N, data: JobDataMap[N], opts: AddJobOptions = {}): Promise<void> {
    if (this.closed) return;
    const delay = Math.max(0, opts.delayMs ?? 0);
    const jobOpts: JobsOptions = {
      delay,
      attempts: this.policy.attempts,
      backoff: { type: BACKOFF_TYPE },
      removeOnComplete: true,
      removeOnFail: { age: 24 * 3600, count: 1000 },
    };
    if (opts.jobId !== undefined) {
      // Deduplication (not a fixed BullMQ jobId, which would also swallow adds while the job runs):
      // keepLastIfActive keeps one follow-up for a running job; reschedule brings a delayed job
      // forward to an immediate wake-up.
      jobOpts.deduplication = { id: opts.jobId, keepLastIfActive: true, reschedule: delay === 0 };
    }
    const q = this.producer(name);
    const job = await q.add(name, data, jobOpts);
    if (opts.jobId !== undefined && delay > 0 && job.id) await this.bringForward(q, job.id, delay);
  }

  /**
   * A delayed add that was deduplicated against a job due later moves that job earlier, as the
   * in-process queue does. Best effort: the job may have started meanwhile.
   */
  private async bringForward(q: Queue, jobId: string, delay: number): Promise<void> {
    try {
      const existing = await q.getJob(jobId);
      if (!existing) return;
      const due = existing.timestamp + (existing.delay ?? 0);
      if (due > Date.now() + delay && (await existing.isDelayed())) await existing.changeDelay(delay);
    } catch (err) {
      this.logger.debug({ err: (err as Error).message }, 'could not bring a delayed job forward');
    }
  }

  process<N extends JobName>(name: N, handler: JobHandler<N>, opts: ProcessOptions = {}): void {
    if (this.workers.has(name)) throw new Error(`a processor for ${name} is already registered`);
    const worker = new Worker(name, async (job) => handler(job.data as JobDataMap[N]), {
      connection: this.connection,
      prefix: this.opts.prefix,
      concurrency: Math.max(1, opts.concurrency ?? 1),
      settings: { backoffStrategy: (attemptsMade: number) => retryDelay(this.policy, attemptsMade) },
    });
    worker.on('failed', (job, err) => {
      const final = !job || job.attemptsMade >= (job.opts.attempts ?? 1);
      const fields = { queue: name, jobId: job?.id, attempt: job?.attemptsMade, err: err.stack ?? err.message };
      if (final) this.logger.error(fields, 'job failed; giving up');
      else this.logger.warn(fields, 'job failed; retrying');
    });
    worker.on('error', (err: Error) => this.logger.warn({ queue: name, err: err.message }, 'job worker (redis) error'));
    this.workers.set(name, worker);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const timeoutMs = this.opts.closeTimeoutMs ?? 10_000;
    await Promise.all([...this.workers.values()].map(async (w) => {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        w.close().then(() => false),
        new Promise<boolean>((r) => { timer = setTimeout(() => r(true), timeoutMs); }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        this.logger.warn({ queue: w.name }, 'job worker closed with jobs still running');
        await w.close(true).catch(() => undefined);
      }
    }));
    await Promise.all([...this.producers.values()].map((q) => q.close().catch(() => undefined)));
  }
}
