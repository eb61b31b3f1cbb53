// Picks the job queue: BullMQ when Redis is configured, else the in-process one.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { InProcessJobQueue } from './in-process-queue.js';
import type { JobQueue, RetryPolicy } from './queue.js';

export type { JobQueue, JobName, JobDataMap, AddJobOptions, ProcessOptions, JobHandler, RetryPolicy } from './queue.js';
export { InProcessJobQueue } from './in-process-queue.js';
export { BullMqJobQueue } from './bullmq-queue.js';

/**
 * The Redis key prefix for this deployment: processes serving one server name from one database
 * share queues; anything else sharing the Redis (another deployment, a parallel test server) does
 * not. The database URL is hashed, so no credential reaches Redis.
 */
export function jobQueuePrefix(config: Pick<Config, 'server_name' | 'database'>): string {
  const h = createHash('sha256').update(`${config.server_name}\u0000${config.database.url}`).digest('hex').slice(0, 16);
  return `lattice:${h}`;
}

/** BullMQ (and its Redis client) are loaded only when Redis is configured: the embedded default starts faster and smaller. */
export async function createJobQueue(config: Pick<Config, 'server_name' | 'database' | 'redis'>, logger: Logger, retry: Partial<RetryPolicy> = {}): Promise<JobQueue> {
  const log = logger.child({ module: 'jobs' });
  if (config.redis.url) {
    const { BullMqJobQueue } = await import('./bullmq-queue.js');
    return new BullMqJobQueue({ url: config.redis.url, prefix: jobQueuePrefix(config), ...retry }, log);
  }
  return new InProcessJobQueue(log, retry);
}
