// Job processors: the edge where queued jobs call into services. Producers (services calling
// JobQueue.add) never import this file.
import type { FederationSender } from '../federation/sender.js';
import type { JobQueue } from './queue.js';

export interface ProcessorOptions {
  /** Destinations drained at once by this process (each has at most one transaction in flight). */
  federationSendConcurrency?: number;
}

export function registerProcessors(jobs: JobQueue, s: { federationSender: FederationSender | null }, opts: ProcessorOptions = {}): void {
  const sender = s.federationSender;
  if (sender) {
    jobs.process('federation-send', (data) => sender.drain(data.destination), { concurrency: opts.federationSendConcurrency ?? 16 });
  }
}
