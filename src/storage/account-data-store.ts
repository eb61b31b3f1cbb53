import type { Knex } from 'knex';
import type { AccountDataRow } from './rows.js';

export class AccountDataStore {
  constructor(private readonly db: Knex) {}

  async get(userId: string, roomId: string, type: string, q: Knex = this.db): Promise<Record<string, unknown> | undefined> {
    const row = await q<AccountDataRow>('account_data').where({ user_id: userId, room_id: roomId, type }).first('content');
    return row ? JSON.parse(row.content) : undefined;
  }

  async put(userId: string, roomId: string, type: string, content: unknown, streamId: number, q: Knex): Promise<void> {
    await q('account_data')
      .insert({ user_id: userId, room_id: roomId, type, content: JSON.stringify(content), stream_id: streamId })
      .onConflict(['user_id', 'room_id', 'type'])
      .merge(['content', 'stream_id']);
  }

  /** Changes after `since` (exclusive) up to `upTo` (inclusive); all of them when since is 0. */
  async changedSince(userId: string, since: number, upTo: number, q: Knex = this.db): Promise<AccountDataRow[]> {
    return q<AccountDataRow>('account_data')
      .where({ user_id: userId })
      .andWhere('stream_id', '>', since)
      .andWhere('stream_id', '<=', upTo)
      .orderBy('stream_id');
  }

  async deleteAllOfUser(userId: string, q: Knex = this.db): Promise<void> {
    await q('account_data').where({ user_id: userId }).delete();
  }
}
