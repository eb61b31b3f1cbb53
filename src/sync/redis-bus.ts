// Relays stream changes between homeserver processes that share a database, over Redis pub/sub.
// Each process publishes what it committed; the others wake their parked long-polls and drop
// caches the change invalidates.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { NotifierBus, StreamChange } from './notifier.js';


export class RedisBus implements NotifierBus {
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly origin = randomBytes(8).toString('hex');
  private handler: ((c: StreamChange) => void) | null = null;

  private constructor(url: string, private readonly channel: string, private readonly logger: Logger) {
    this.pub = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: null });
    this.sub = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: null });
    this.sub.on('message', (_channel: string, message: string) => {
      try {
        const { origin, change } = JSON.parse(message) as { origin: string; change: StreamChange };
        if (origin !== this.origin) this.handler?.(change);
      } catch (err) {
        this.logger.warn({ err }, 'bad message on the stream bus');
      }
    });
    for (const c of [this.pub, this.sub]) c.on('error', (err: Error) => this.logger.warn({ err: err.message }, 'redis error'));
  }

  /**
   * `namespace` separates deployments sharing one Redis (the same one as the job queues'): only
   * processes of the same homeserver and database exchange positions.
   */
  static async connect(url: string, namespace: string, logger: Logger): Promise<RedisBus> {
    const bus = new RedisBus(url, `${namespace}:stream-changes`, logger);
    await bus.pub.connect();
    await bus.sub.connect();
    await bus.sub.subscribe(bus.channel);
    return bus;
  }

  publish(change: StreamChange): void {
    this.pub.publish(this.channel, JSON.stringify({ origin: this.origin, change })).catch((err: Error) => {
      this.logger.warn({ err: err.message }, 'could not publish a stream change');
    });
  }

  onRemote(handler: (change: StreamChange) => void): void {
    this.handler = handler;
  }

  async close(): Promise<void> {
    this.sub.disconnect();
    await this.pub.quit().catch(() => undefined);
  }
}
