// Job queue semantics, for the in-process queue and (with TEST_REDIS_URL) the BullMQ one against a
// real Redis: running, concurrency, retries with backoff, dedupe by jobId, follow-ups, delays, close.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { Redis } from 'ioredis';
import { InProcessJobQueue } from '../../src/jobs/in-process-queue.js';
import { BullMqJobQueue } from '../../src/jobs/bullmq-queue.js';
import type { JobQueue, RetryPolicy } from '../../src/jobs/queue.js';
import { retryDelay } from '../../src/jobs/queue.js';

const logger = pino({ level: 'silent' });
const redisUrl = process.env.TEST_REDIS_URL || null;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface Impl { name: string; skip: string | false; make(policy?: Partial<RetryPolicy>): { q: JobQueue; cleanup(): Promise<void> } }

const impls: Impl[] = [
  {
    name: 'in-process',
    skip: false,
    make: (policy = {}) => {
      const q = new InProcessJobQueue(logger, { closeTimeoutMs: 2000, ...policy });
      return { q, cleanup: () => q.close() };
    },
  },
  {
    name: 'bullmq',
    skip: redisUrl ? false : 'needs TEST_REDIS_URL',
    make: (policy = {}) => {
      const prefix = `lattice-test:${randomBytes(6).toString('hex')}`;
      const q = new BullMqJobQueue({ url: redisUrl!, prefix, closeTimeoutMs: 2000, ...policy }, logger);
      return {
        q,
        async cleanup() {
          await q.close();
          const r = new Redis(redisUrl!);
          const keys = await r.keys(`${prefix}:*`);
          if (keys.length) await r.del(...keys);
          r.disconnect();
        },
      };
    },
  },
];

test('retryDelay doubles and is capped', () => {
  const p = { attempts: 10, backoffMs: 100, maxBackoffMs: 500 };
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelay(p, n)), [100, 200, 400, 500, 500]);
});

for (const impl of impls) {
  describe(`${impl.name} job queue`, { skip: impl.skip }, () => {
    test('runs jobs with at most `concurrency` at once', async () => {
      const { q, cleanup } = impl.make();
      try {
        let active = 0;
        let max = 0;
        const done: number[] = [];
        q.process('push-deliver', async (data) => {
          active++;
          max = Math.max(max, active);
          await sleep(40);
          active--;
          done.push(data.n as number);
        }, { concurrency: 3 });
        for (let n = 0; n < 9; n++) await q.add('push-deliver', { n });
        await until(() => done.length === 9, 10_000, 'nine jobs');
        assert.equal(max, 3);
        assert.deepEqual([...done].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
      } finally {
        await cleanup();
      }
    });

    test('retries a failing job with exponential backoff, then gives up', async () => {
      const { q, cleanup } = impl.make({ attempts: 4, backoffMs: 100, maxBackoffMs: 1000 });
      try {
        const runs: Record<string, number[]> = {};
        q.process('push-deliver', async (data) => {
          const k = String(data.k);
          (runs[k] ??= []).push(Date.now());
          if (k === 'flaky' && runs[k].length < 3) throw new Error('not yet');
          if (k === 'broken') throw new Error('never');
        });
        await q.add('push-deliver', { k: 'flaky' });
        await q.add('push-deliver', { k: 'broken' });
        await until(() => (runs.flaky?.length ?? 0) === 3 && (runs.broken?.length ?? 0) === 4, 15_000, 'retries');
        const gaps = runs.flaky.slice(1).map((t, i) => t - runs.flaky[i]);
        assert.ok(gaps[0] >= 90 && gaps[0] < 1000, `first retry after ${gaps[0]} ms`);
        assert.ok(gaps[1] >= 190 && gaps[1] < 1500, `second retry after ${gaps[1]} ms`);
        await sleep(1200);
        assert.equal(runs.flaky.length, 3, 'a job that succeeded is not run again');
        assert.equal(runs.broken.length, 4, 'gives up after `attempts` runs');
      } finally {
        await cleanup();
      }
    });

    test('dedupes by jobId while pending; a sooner add brings a delayed job forward', async () => {
      const { q, cleanup } = impl.make();
      try {
        const runs: string[] = [];
        // Register the processor after adding, so all adds happen while the job is pending.
        for (let i = 0; i < 5; i++) await q.add('push-deliver', { k: 'a' }, { jobId: 'same' });
        await q.add('push-deliver', { k: 'late' }, { jobId: 'later', delayMs: 60_000 });
        await q.add('push-deliver', { k: 'late' }, { jobId: 'later', delayMs: 200 });
        const t0 = Date.now();
        let lateAt = 0;
        q.process('push-deliver', async (data) => {
          runs.push(String(data.k));
          if (data.k === 'late') lateAt = Date.now();
        });
        await until(() => runs.includes('late'), 10_000, 'the delayed job');
        await sleep(300);
        assert.deepEqual(runs.filter((k) => k === 'a'), ['a'], 'five adds with one jobId run once');
        assert.deepEqual(runs.filter((k) => k === 'late'), ['late']);
        assert.ok(lateAt - t0 < 5000, 'brought forward from 60 s');
        // Once it has run, the same jobId can run again.
        await q.add('push-deliver', { k: 'a' }, { jobId: 'same' });
        await until(() => runs.filter((k) => k === 'a').length === 2, 10_000, 'a second run');
      } finally {
        await cleanup();
      }
    });

    test('an add while the job runs keeps one follow-up, never run concurrently', async () => {
      const { q, cleanup } = impl.make();
      try {
        let active = 0;
        let max = 0;
        let runs = 0;
        let release!: () => void;
        const gate = new Promise<void>((r) => { release = r; });
        q.process('federation-send', async () => {
          active++;
          max = Math.max(max, active);
          runs++;
          if (runs === 1) await gate;
          await sleep(20);
          active--;
        }, { concurrency: 4 });
        await q.add('federation-send', { destination: 'x' }, { jobId: 'dest-x' });
        await until(() => runs === 1, 10_000, 'the first run');
        for (let i = 0; i < 5; i++) await q.add('federation-send', { destination: 'x' }, { jobId: 'dest-x' });
        await sleep(100);
        assert.equal(runs, 1, 'no second run while the first is running');
        release();
        await until(() => runs === 2, 10_000, 'the follow-up');
        await sleep(300);
        assert.equal(runs, 2, 'one follow-up for five adds');
        assert.equal(max, 1);
      } finally {
        await cleanup();
      }
    });

    test('delayed jobs wait for their delay', async () => {
      const { q, cleanup } = impl.make();
      try {
        const at: number[] = [];
        q.process('media-thumbnail', async () => { at.push(Date.now()); });
        const t0 = Date.now();
        await q.add('media-thumbnail', { id: 1 }, { delayMs: 300 });
        await until(() => at.length === 1, 10_000, 'the delayed job');
        assert.ok(at[0] - t0 >= 290, `ran after ${at[0] - t0} ms`);
      } finally {
        await cleanup();
      }
    });

    test('close waits for a running job and stops taking new ones', async () => {
      const { q, cleanup } = impl.make();
      let finished = false;
      let started = 0;
      q.process('push-deliver', async () => {
        started++;
        await sleep(200);
        finished = true;
      });
      await q.add('push-deliver', { n: 1 });
      await until(() => started === 1, 10_000, 'the job to start');
      await q.close();
      assert.ok(finished, 'close waited for the running job');
      await q.add('push-deliver', { n: 2 }); // ignored after close, no throw
      await sleep(100);
      assert.equal(started, 1);
      await cleanup();
    });
  });
}
