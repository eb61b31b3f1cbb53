// Filters, receipts, typing, presence.
import type { Knex } from 'knex';

export interface ReceiptRow {
  room_nid: number;
  user_id: string;
  receipt_type: string;
  thread_id: string;
  event_id: string;
  event_stream: number | string;
  ts: number | string;
  stream_id: number | string;
}

export interface PresenceRow {
  user_id: string;
  state: string;
  status_msg: string | null;
  last_active_ts: number | string;
  last_sync_ts: number | string;
  currently_active: boolean | number;
  stream_id: number | string;
}

export class SyncStore {
  constructor(private readonly db: Knex) {}

  // Filters

  async insertFilter(userId: string, json: string, q: Knex = this.db): Promise<number> {
    const r = await q('filters').insert({ user_id: userId, json }).returning('filter_id');
    const v = r[0] as { filter_id: number } | number;
    return typeof v === 'object' ? Number(v.filter_id) : Number(v);
  }

  async filter(userId: string, filterId: number, q: Knex = this.db): Promise<string | undefined> {
    return (await q('filters').where({ user_id: userId, filter_id: filterId }).first('json'))?.json;
  }

  // Receipts

  /** Stores a receipt unless the user already has one for a later event (receipts only move forward). */
  async upsertReceipt(row: ReceiptRow, q: Knex): Promise<boolean> {
    const existing = await q<ReceiptRow>('receipts')
      .where({ room_nid: row.room_nid, user_id: row.user_id, receipt_type: row.receipt_type, thread_id: row.thread_id }).first();
    if (existing && Number(existing.event_stream) >= Number(row.event_stream)) return false;
    await q('receipts').insert(row).onConflict(['room_nid', 'user_id', 'receipt_type', 'thread_id'])
      .merge(['event_id', 'event_stream', 'ts', 'stream_id']);
    return true;
  }

  async receiptsBetween(roomNids: readonly number[], from: number, to: number, q: Knex = this.db): Promise<ReceiptRow[]> {
    if (!roomNids.length) return [];
    const query = q<ReceiptRow>('receipts').whereIn('room_nid', roomNids as number[]).andWhere('stream_id', '<=', to);
    if (from > 0) query.andWhere('stream_id', '>', from);
    return query;
  }

  async receiptsOfUser(userId: string, roomNids: readonly number[], q: Knex = this.db): Promise<ReceiptRow[]> {
    if (!roomNids.length) return [];
    return q<ReceiptRow>('receipts').where({ user_id: userId }).whereIn('room_nid', roomNids as number[]);
  }

  // Typing

  async setTyping(roomNid: number, userId: string, expiresTs: number | null, streamId: number, q: Knex): Promise<void> {
    if (expiresTs === null) await q('typing').where({ room_nid: roomNid, user_id: userId }).delete();
    else await q('typing').insert({ room_nid: roomNid, user_id: userId, expires_ts: expiresTs }).onConflict(['room_nid', 'user_id']).merge(['expires_ts']);
    await q('typing_rooms').insert({ room_nid: roomNid, stream_id: streamId }).onConflict('room_nid').merge(['stream_id']);
  }

  async isTyping(roomNid: number, userId: string, q: Knex = this.db): Promise<boolean> {
    return !!(await q('typing').where({ room_nid: roomNid, user_id: userId }).first('user_id'));
  }

  async expiredTyping(now: number, q: Knex = this.db): Promise<{ room_nid: number; user_id: string }[]> {
    return q('typing').where('expires_ts', '<=', now).select('room_nid', 'user_id');
  }

  async deleteTypingIfExpired(roomNid: number, userId: string, now: number, q: Knex): Promise<boolean> {
    return (await q('typing').where({ room_nid: roomNid, user_id: userId }).andWhere('expires_ts', '<=', now).delete()) > 0;
  }

  async typingRoomsChanged(roomNids: readonly number[], from: number, to: number, q: Knex = this.db): Promise<number[]> {
    if (!roomNids.length) return [];
    const query = q('typing_rooms').whereIn('room_nid', roomNids as number[]).andWhere('stream_id', '<=', to);
    if (from > 0) query.andWhere('stream_id', '>', from);
    return (await query.select('room_nid')).map((r: { room_nid: number }) => r.room_nid);
  }

  async typingUsers(roomNids: readonly number[], now: number, q: Knex = this.db): Promise<{ room_nid: number; user_id: string }[]> {
    if (!roomNids.length) return [];
    return q('typing').whereIn('room_nid', roomNids as number[]).andWhere('expires_ts', '>', now).select('room_nid', 'user_id');
  }

  /** Stripped state sent along with an invite to a room this server is not in. */
  async remoteInviteState(roomNid: number, userId: string, q: Knex = this.db): Promise<unknown[] | undefined> {
    const r = await q('remote_invites').where({ room_nid: roomNid, user_id: userId }).first('invite_state');
    return r ? JSON.parse(r.invite_state) : undefined;
  }

  // Presence

  async presence(userId: string, q: Knex = this.db): Promise<PresenceRow | undefined> {
    return q<PresenceRow>('presence').where({ user_id: userId }).first();
  }

  async upsertPresence(row: PresenceRow, q: Knex): Promise<void> {
    await q('presence').insert(row).onConflict('user_id').merge(['state', 'status_msg', 'last_active_ts', 'last_sync_ts', 'currently_active', 'stream_id']);
  }

  async touchPresenceSync(userId: string, now: number, q: Knex = this.db): Promise<void> {
    await q('presence').where({ user_id: userId }).update({ last_sync_ts: now });
  }

  async presenceChanged(userIds: readonly string[], from: number, to: number, q: Knex = this.db): Promise<PresenceRow[]> {
    if (!userIds.length) return [];
    const out: PresenceRow[] = [];
    for (let i = 0; i < userIds.length; i += 500) {
      const query = q<PresenceRow>('presence').whereIn('user_id', userIds.slice(i, i + 500) as string[]).andWhere('stream_id', '<=', to);
      if (from > 0) query.andWhere('stream_id', '>', from);
      out.push(...(await query));
    }
    return out;
  }

  /** Users whose presence should time out: online without a sync or activity for a while. */
  async presenceToTimeOut(now: number, syncTimeoutMs: number, idleMs: number, q: Knex = this.db): Promise<PresenceRow[]> {
    return q<PresenceRow>('presence')
      .whereIn('state', ['online', 'unavailable', 'busy'])
      .andWhere((w) => w.where('last_sync_ts', '<', now - syncTimeoutMs).orWhere((w2) => w2.where('state', 'online').andWhere('last_active_ts', '<', now - idleMs)));
  }
}
