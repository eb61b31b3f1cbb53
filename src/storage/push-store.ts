// Push rules (one JSON row per user) and push actions (one row per notifying event and user).
import type { Knex } from 'knex';
import type { EventRow } from './events-store.js';
import { dialectOf } from './db.js';

export interface PushRulesRow {
  user_id: string;
  rules: string;
  overrides: string;
  stream_id: number | string;
}

export interface PushActionRow {
  user_id: string;
  event_nid: number;
  room_nid: number;
  notify: boolean | number;
  highlight: boolean | number;
  thread_id: string | null;
  actions: string;
  ts: number | string;
}

/** A push action joined with its event, for GET /notifications. */
export type NotificationRow = EventRow & {
  push_highlight: boolean | number;
  push_thread_id: string | null;
  push_actions: string;
  push_ts: number | string;
};

/** Stream-ordering thresholds for one room: push actions of events at or below them are read. */
export interface UnreadThresholds {
  roomNid: number;
  /** Applies to every event of the room (the unthreaded receipt). */
  unthreaded?: number;
  /** Applies to main-timeline events (thread_id null). */
  main?: number;
  /** Per thread root: applies to that thread's events. */
  threads?: Readonly<Record<string, number>>;
}

export interface UnreadCountRow {
  room_nid: number;
  thread_id: string | null;
  n: number | string;
  h: number | string | null;
}

const INSERT_CHUNK = 500; // 8 columns a row: well under SQLite's bind limit
const MAX_BINDINGS = 2000;
const NEVER_READ = Number.MIN_SAFE_INTEGER;

export class PushStore {
  constructor(private readonly db: Knex) {}

  // Push rules

  async userRules(userId: string, q: Knex = this.db): Promise<PushRulesRow | undefined> {
    return q<PushRulesRow>('push_rules').where({ user_id: userId }).first();
  }

  async userRulesMany(userIds: readonly string[], q: Knex = this.db): Promise<PushRulesRow[]> {
    const out: PushRulesRow[] = [];
    for (let i = 0; i < userIds.length; i += 500) {
      out.push(...(await q<PushRulesRow>('push_rules').whereIn('user_id', userIds.slice(i, i + 500) as string[])));
    }
    return out;
  }

  /**
   * Makes sure the user's row exists and holds its lock until the transaction ends, so concurrent
   * read-modify-write changes of one user's rules serialise (PostgreSQL row lock; SQLite has one
   * writer anyway). A no-op UPDATE works on both dialects, unlike SELECT ... FOR UPDATE.
   */
  async lockUserRules(userId: string, trx: Knex): Promise<void> {
    await trx('push_rules').insert({ user_id: userId, rules: '{}', overrides: '{}', stream_id: 0 }).onConflict('user_id').ignore();
    await trx('push_rules').where({ user_id: userId }).update({ stream_id: trx.ref('stream_id') });
  }

  async writeUserRules(userId: string, rules: unknown, overrides: unknown, streamId: number, trx: Knex): Promise<void> {
    await trx('push_rules')
      .insert({ user_id: userId, rules: JSON.stringify(rules), overrides: JSON.stringify(overrides), stream_id: streamId })
      .onConflict('user_id')
      .merge(['rules', 'overrides', 'stream_id']);
  }

  /** Whether the user's rules last changed in (since, upTo]. */
  async rulesChangedBetween(userId: string, since: number, upTo: number, q: Knex = this.db): Promise<boolean> {
    if (since >= upTo) return false;
    const row = await q('push_rules').where({ user_id: userId }).andWhere('stream_id', '>', since).andWhere('stream_id', '<=', upTo).first('user_id');
    return !!row;
  }

  /** Users whose rules changed after `position` (for dropping cached rulesets). */
  async usersChangedAfter(position: number, q: Knex = this.db): Promise<string[]> {
    const rows = await q('push_rules').where('stream_id', '>', position).select('user_id');
    return rows.map((r: { user_id: string }) => r.user_id);
  }

  /** The `push_rules` stream position (read-only; allocation is StreamsStore.nextPosition). */
  async pushRulesPosition(q: Knex = this.db): Promise<number> {
    const row = await q('stream_positions').where({ stream: 'push_rules' }).first('position');
    return Number(row?.position ?? 0);
  }

  // Push actions

  /**
   * One event's push actions, all users at once. PostgreSQL gets the columns as 8 arrays through
   * unnest(): one small statement whatever the room size, which is ~30% faster than a multi-row
   * VALUES list of 8 parameters a row (measured at 100 rows); SQLite has no arrays, so VALUES chunks.
   */
  async insertActions(rows: readonly PushActionRow[], trx: Knex): Promise<void> {
    if (!rows.length) return;
    if (dialectOf(trx) === 'pg') {
      const col = <K extends keyof PushActionRow>(k: K) => rows.map((r) => r[k]);
      await trx.raw(
        `INSERT INTO event_push_actions (user_id, event_nid, room_nid, notify, highlight, thread_id, actions, ts)
         SELECT * FROM unnest(?::text[], ?::int[], ?::int[], ?::bool[], ?::bool[], ?::text[], ?::text[], ?::bigint[])
         ON CONFLICT DO NOTHING`,
        [col('user_id'), col('event_nid'), col('room_nid'), col('notify'), col('highlight'), col('thread_id'), col('actions'), col('ts')] as unknown as Knex.RawBinding[],
      );
      return;
    }
    for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
      await trx('event_push_actions').insert(rows.slice(i, i + INSERT_CHUNK)).onConflict(['user_id', 'room_nid', 'event_nid']).ignore();
    }
  }

  /** Drops the push actions of `eventId` if `redactionId` redacted it (redacted events do not count). */
  async deleteActionsOfRedacted(eventId: string, redactionId: string, trx: Knex): Promise<void> {
    await trx('event_push_actions')
      .whereIn('event_nid', trx('events').where({ event_id: eventId, redacted_by: redactionId }).select('event_nid'))
      .delete();
  }

  /**
   * Notification and highlight counts per (room, thread) of events after the given thresholds,
   * in one query per chunk of rooms. The threshold for an action is chosen by a CASE: its thread's
   * receipt, else the main-timeline receipt (for thread_id null), else the unthreaded receipt; each
   * already the maximum of the applicable receipts (see unreadThresholdSql).
   */
  async unreadCounts(userId: string, rooms: readonly UnreadThresholds[], q: Knex = this.db): Promise<UnreadCountRow[]> {
    const out: UnreadCountRow[] = [];
    let chunk: UnreadThresholds[] = [];
    let bindings = 0;
    const flush = async () => {
      if (!chunk.length) return;
      out.push(...(await this.unreadCountsChunk(userId, chunk, q)));
      chunk = [];
      bindings = 0;
    };
    for (const r of rooms) {
      const cost = 5 + 3 * Object.keys(r.threads ?? {}).length;
      if (bindings + cost > MAX_BINDINGS) await flush();
      chunk.push(r);
      bindings += cost;
    }
    await flush();
    return out;
  }

  private async unreadCountsChunk(userId: string, rooms: readonly UnreadThresholds[], q: Knex): Promise<UnreadCountRow[]> {
    const { sql, bindings } = unreadThresholdSql(rooms);
    const rows = await q('event_push_actions as a')
      .join('events as e', 'e.event_nid', 'a.event_nid')
      .where('a.user_id', userId)
      .whereIn('a.room_nid', rooms.map((r) => r.roomNid))
      .whereNotNull('e.stream_ordering')
      .whereRaw(`e.stream_ordering > ${sql}`, bindings)
      .groupBy('a.room_nid', 'a.thread_id')
      .select('a.room_nid', 'a.thread_id', q.raw('COUNT(*) AS n'), q.raw('SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END) AS h'));
    return rows as unknown as UnreadCountRow[];
  }

  /** A user's push actions with their events, newest first, strictly before `beforeNid`. */
  async notifications(userId: string, opts: { beforeNid?: number; limit: number; onlyHighlight?: boolean }, q: Knex = this.db): Promise<NotificationRow[]> {
    const query = q('event_push_actions as a')
      .join('events as e', 'e.event_nid', 'a.event_nid')
      .where('a.user_id', userId)
      .whereNotNull('e.stream_ordering');
    if (opts.beforeNid !== undefined) query.andWhere('a.event_nid', '<', opts.beforeNid);
    if (opts.onlyHighlight) query.andWhere('a.highlight', true);
    return query
      .orderBy('a.event_nid', 'desc')
      .limit(opts.limit)
      .select('e.*', 'a.highlight as push_highlight', 'a.thread_id as push_thread_id', 'a.actions as push_actions', 'a.ts as push_ts');
  }
}

/**
 * The CASE expression giving, per push action row (`a`), the stream ordering up to which it is read.
 * Thresholds are CAST to BIGINT: PostgreSQL cannot infer a type for a CASE whose branches are all
 * untyped parameters.
 */
export function unreadThresholdSql(rooms: readonly UnreadThresholds[]): { sql: string; bindings: (string | number)[] } {
  const parts: string[] = [];
  const bindings: (string | number)[] = [];
  for (const r of rooms) {
    const base = r.unthreaded ?? NEVER_READ;
    for (const [thread, pos] of Object.entries(r.threads ?? {})) {
      if (!(pos > base)) continue;
      parts.push('WHEN a.room_nid = ? AND a.thread_id = ? THEN CAST(? AS BIGINT)');
      bindings.push(r.roomNid, thread, pos);
    }
    if (r.main !== undefined && r.main > base) {
      parts.push('WHEN a.room_nid = ? AND a.thread_id IS NULL THEN CAST(? AS BIGINT)');
      bindings.push(r.roomNid, r.main);
    }
    if (base !== NEVER_READ) {
      parts.push('WHEN a.room_nid = ? THEN CAST(? AS BIGINT)');
      bindings.push(r.roomNid, base);
    }
  }
  bindings.push(NEVER_READ);
  return { sql: parts.length ? `(CASE ${parts.join(' ')} ELSE CAST(? AS BIGINT) END)` : 'CAST(? AS BIGINT)', bindings };
}
