import type { Knex } from 'knex';
import type { AccountDataStore } from '../storage/account-data-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { Notifier } from '../sync/notifier.js';

export class AccountData {
  constructor(
    private readonly db: Knex,
    private readonly store: AccountDataStore,
    private readonly streams: StreamsStore,
    private readonly notifier: Notifier,
  ) {}

  async get(userId: string, roomId: string, type: string): Promise<Record<string, unknown> | undefined> {
    return this.store.get(userId, roomId, type);
  }

  async put(userId: string, roomId: string, type: string, content: Record<string, unknown>): Promise<number> {
    const position = await this.db.transaction(async (trx) => {
      const pos = await this.streams.nextPosition(trx, 'account_data');
      await this.store.put(userId, roomId, type, content, pos, trx);
      return pos;
    });
    this.notifier.notify({ stream: 'account_data', position, userIds: [userId] });
    return position;
  }
}
