// Rooms, events, state groups, current state, membership, extremities, relations, txn ids.
import type { Knex } from 'knex';
import { dialectOf } from './db.js';

export interface RoomRow {
  room_nid: number;
  room_id: string;
  room_version: string;
  creator: string | null;
  created_ts: number | string;
  is_public: boolean | number;
  current_state_group: number | null;
  is_local: boolean | number;
}

export interface EventRow {
  event_nid: number;
  event_id: string;
  room_nid: number;
  stream_ordering: number | string | null;
  depth: number | string;
  type: string;
  state_key: string | null;
  sender: string;
  origin_server_ts: number | string;
  json: string;
  state_group: number | null;
  outlier: boolean | number;
  soft_failed: boolean | number;
  rejected_reason: string | null;
  redacted_by: string | null;
  replaces_state: string | null;
  txn_id: string | null;
  device_id: string | null;
  contains_url: boolean | number;
}

export type NewEventRow = Omit<EventRow, 'event_nid'>;

export interface MemberRow {
  room_nid: number;
  user_id: string;
  membership: string;
  event_nid: number;
  stream_ordering: number | string;
  displayname: string | null;
  avatar_url: string | null;
  forgotten: boolean | number;
}

export interface StateEntry { type: string; state_key: string; event_id: string | null }

const firstId = (r: unknown[], col: string): number => {
  const v = r[0] as Record<string, number> | number;
  return typeof v === 'object' ? Number(v[col]) : Number(v);
};

export class EventsStore {
  constructor(private readonly db: Knex) {}

  get dialect() {
    return dialectOf(this.db);
  }

  // Rooms

  async roomById(roomId: string, q: Knex = this.db): Promise<RoomRow | undefined> {
    return q<RoomRow>('rooms').where({ room_id: roomId }).first();
  }

  async roomByNid(nid: number, q: Knex = this.db): Promise<RoomRow | undefined> {
    return q<RoomRow>('rooms').where({ room_nid: nid }).first();
  }

  async insertRoom(row: Omit<RoomRow, 'room_nid'>, q: Knex): Promise<number> {
    return firstId(await q('rooms').insert(row).returning('room_nid'), 'room_nid');
  }

  async setCurrentStateGroup(roomNid: number, group: number, q: Knex): Promise<void> {
    await q('rooms').where({ room_nid: roomNid }).update({ current_state_group: group });
  }

  async currentStateGroup(roomNid: number, q: Knex = this.db): Promise<number | null> {
    const r = await q('rooms').where({ room_nid: roomNid }).first('current_state_group');
    return r?.current_state_group ?? null;
  }

  async setRoomPublic(roomNid: number, isPublic: boolean, q: Knex = this.db): Promise<void> {
    await q('rooms').where({ room_nid: roomNid }).update({ is_public: isPublic });
  }

  async publicRooms(q: Knex = this.db): Promise<RoomRow[]> {
    return q<RoomRow>('rooms').where({ is_public: true });
  }

  async isRoomPublic(roomNid: number, q: Knex = this.db): Promise<boolean> {
    const r = await q('rooms').where({ room_nid: roomNid }).first('is_public');
    return r?.is_public === true || r?.is_public === 1;
  }

  /** Rooms published in the directory with their joined member counts, most members first. */
  async publicRoomsByJoinedMembers(q: Knex = this.db): Promise<{ room_nid: number; room_id: string; joined: number }[]> {
    const rows = await q('rooms as r')
      .leftJoin('room_members as m', (j) => j.on('m.room_nid', '=', 'r.room_nid').andOnVal('m.membership', '=', 'join'))
      .where('r.is_public', true)
      .groupBy('r.room_nid', 'r.room_id')
      .select('r.room_nid', 'r.room_id')
      .count({ joined: 'm.user_id' })
      .orderBy([{ column: 'joined', order: 'desc' }, { column: 'r.room_id', order: 'asc' }]);
    return (rows as { room_nid: number; room_id: string; joined: number | string }[]).map((r) => ({ room_nid: Number(r.room_nid), room_id: r.room_id, joined: Number(r.joined) }));
  }

  /** Serialises writers of one room across processes (PostgreSQL); SQLite has one writer anyway. */
  async lockRoom(roomId: string, trx: Knex): Promise<void> {
    if (dialectOf(trx) === 'pg') await trx.raw('SELECT pg_advisory_xact_lock(hashtext(?))', [roomId]);
  }

  // Events

  async insertEvent(row: NewEventRow, q: Knex): Promise<number> {
    return firstId(await q('events').insert(row).returning('event_nid'), 'event_nid');
  }

  /** Inserts an event unless one with its id exists (outliers may arrive twice concurrently). */
  /** Many at once (an auth chain or a room's state learnt on join), in multi-row statements. */
  async insertEventsIfNew(rows: readonly NewEventRow[], q: Knex): Promise<void> {
    for (let i = 0; i < rows.length; i += 100) await q('events').insert(rows.slice(i, i + 100)).onConflict('event_id').ignore();
  }

  async setStreamOrdering(eventNid: number, position: number, q: Knex): Promise<void> {
    await q('events').where({ event_nid: eventNid }).update({ stream_ordering: position });
  }

  async setEventStateGroup(eventNid: number, group: number, q: Knex): Promise<void> {
    await q('events').where({ event_nid: eventNid }).update({ state_group: group });
  }

  /** The room's current state group and forward extremities, in one query. */
  async roomHead(roomNid: number, q: Knex = this.db): Promise<{ stateGroup: number | null; extremities: { event_id: string; event_nid: number; depth: number }[] }> {
    const rows = await q('rooms as r')
      .leftJoin('forward_extremities as f', 'f.room_nid', 'r.room_nid')
      .leftJoin('events as e', 'e.event_nid', 'f.event_nid')
      .where('r.room_nid', roomNid)
      .select('r.current_state_group', 'e.event_id', 'e.event_nid', 'e.depth');
    return {
      stateGroup: rows[0]?.current_state_group ?? null,
      extremities: rows.filter((r: { event_id: string | null }) => r.event_id !== null)
        .map((r: { event_id: string; event_nid: number; depth: number | string }) => ({ event_id: r.event_id, event_nid: Number(r.event_nid), depth: Number(r.depth) })),
    };
  }

  async eventsByIds(ids: readonly string[], q: Knex = this.db): Promise<EventRow[]> {
    if (!ids.length) return [];
    const out: EventRow[] = [];
    for (let i = 0; i < ids.length; i += 500) out.push(...(await q<EventRow>('events').whereIn('event_id', ids.slice(i, i + 500))));
    return out;
  }

  async eventsByNids(nids: readonly number[], q: Knex = this.db): Promise<EventRow[]> {
    if (!nids.length) return [];
    const out: EventRow[] = [];
    for (let i = 0; i < nids.length; i += 500) out.push(...(await q<EventRow>('events').whereIn('event_nid', nids.slice(i, i + 500))));
    return out;
  }

  async markRedacted(eventId: string, redactedBy: string, redactedJson: string, q: Knex): Promise<void> {
    await q('events').where({ event_id: eventId }).update({ redacted_by: redactedBy, json: redactedJson, contains_url: false });
  }

  /** Events of a room with stream positions in (from, to], newest first. */
  async roomEventsBetween(roomNid: number, from: number, to: number, limit: number, q: Knex = this.db): Promise<EventRow[]> {
    return q<EventRow>('events')
      .where({ room_nid: roomNid })
      .andWhere('stream_ordering', '>', from)
      .andWhere('stream_ordering', '<=', to)
      .orderBy('stream_ordering', 'desc')
      .limit(limit);
  }

  /** Rooms among `roomNids` with an event in (from, to]. */
  async roomsWithEventsBetween(roomNids: readonly number[], from: number, to: number, q: Knex = this.db): Promise<number[]> {
    if (!roomNids.length || from >= to) return [];
    const rows = await q('events')
      .distinct('room_nid')
      .whereIn('room_nid', roomNids)
      .andWhere('stream_ordering', '>', from)
      .andWhere('stream_ordering', '<=', to);
    return rows.map((r: { room_nid: number }) => r.room_nid);
  }

  /**
   * Topological pagination (/messages): events ordered by (depth, stream_ordering), strictly before
   * or after a position.
   */
  async roomEventsTopological(roomNid: number, from: { depth: number; stream: number }, dir: 'b' | 'f', limit: number, q: Knex = this.db): Promise<EventRow[]> {
    const query = q<EventRow>('events').where({ room_nid: roomNid }).whereNotNull('stream_ordering').andWhere('outlier', false);
    if (dir === 'b') {
      query.andWhere((w) => w.where('depth', '<', from.depth).orWhere((w2) => w2.where('depth', '=', from.depth).andWhere('stream_ordering', '<', from.stream)));
      query.orderBy([{ column: 'depth', order: 'desc' }, { column: 'stream_ordering', order: 'desc' }]);
    } else {
      query.andWhere((w) => w.where('depth', '>', from.depth).orWhere((w2) => w2.where('depth', '=', from.depth).andWhere('stream_ordering', '>', from.stream)));
      query.orderBy([{ column: 'depth', order: 'asc' }, { column: 'stream_ordering', order: 'asc' }]);
    }
    return query.limit(limit);
  }

  /** The room's events of lowest depth that are part of the DAG (where backfill continues from). */
  async oldestEvents(roomNid: number, limit: number, q: Knex = this.db): Promise<EventRow[]> {
    return q<EventRow>('events').where({ room_nid: roomNid, outlier: false }).whereNotNull('stream_ordering')
      .orderBy([{ column: 'depth', order: 'asc' }, { column: 'stream_ordering', order: 'asc' }]).limit(limit);
  }

  /** The newest event at or before a stream position (to turn a stream token into a topological one). */
  async lastEventAtOrBefore(roomNid: number, stream: number, q: Knex = this.db): Promise<EventRow | undefined> {
    return q<EventRow>('events').where({ room_nid: roomNid }).andWhere('stream_ordering', '<=', stream).whereNotNull('stream_ordering')
      .andWhere('outlier', false).orderBy('stream_ordering', 'desc').first();
  }

  async eventClosestToTs(roomNid: number, ts: number, dir: 'f' | 'b', q: Knex = this.db): Promise<EventRow | undefined> {
    const query = q<EventRow>('events').where({ room_nid: roomNid, outlier: false }).whereNotNull('stream_ordering');
    if (dir === 'f') return query.andWhere('origin_server_ts', '>=', ts).orderBy([{ column: 'origin_server_ts', order: 'asc' }, { column: 'stream_ordering', order: 'asc' }]).first();
    return query.andWhere('origin_server_ts', '<=', ts).orderBy([{ column: 'origin_server_ts', order: 'desc' }, { column: 'stream_ordering', order: 'desc' }]).first();
  }

  /**
   * Events of a room ordered by origin_server_ts from `ts` in direction `dir` (inclusive), then
   * by stream position; `after` continues strictly past a previous page's last event.
   */
  async eventsNearTs(roomNid: number, ts: number, dir: 'f' | 'b', limit: number, after?: { ts: number; stream: number }, q: Knex = this.db): Promise<EventRow[]> {
    const query = q<EventRow>('events').where({ room_nid: roomNid, outlier: false, soft_failed: false }).whereNotNull('stream_ordering')
      .whereNull('rejected_reason');
    const op = dir === 'f' ? '>' : '<';
    query.andWhere('origin_server_ts', dir === 'f' ? '>=' : '<=', ts);
    if (after) query.andWhere((w) => w.where('origin_server_ts', op, after.ts).orWhere((w2) => w2.where('origin_server_ts', '=', after.ts).andWhere('stream_ordering', op, after.stream)));
    const order = dir === 'f' ? 'asc' : 'desc';
    return query.orderBy([{ column: 'origin_server_ts', order }, { column: 'stream_ordering', order }]).limit(limit);
  }

  // State groups

  async insertStateGroup(roomNid: number, prevGroup: number | null, chainLength: number, entries: readonly { type: string; state_key: string; event_nid: number | null }[], q: Knex): Promise<number> {
    const id = firstId(await q('state_groups').insert({ room_nid: roomNid, prev_group: prevGroup, chain_length: chainLength }).returning('id'), 'id');
    for (let i = 0; i < entries.length; i += 200) {
      await q('state_group_entries').insert(entries.slice(i, i + 200).map((e) => ({ group_id: id, ...e })));
    }
    return id;
  }

  async stateGroupInfo(id: number, q: Knex = this.db): Promise<{ id: number; prev_group: number | null; chain_length: number } | undefined> {
    return q('state_groups').where({ id }).first('id', 'prev_group', 'chain_length');
  }

  /** The chain of groups from `id` back to its snapshot, newest first. */
  async stateGroupChain(id: number, q: Knex = this.db): Promise<number[]> {
    {
      // A recursive CTE works on both PostgreSQL and SQLite.
      const rows = await q.raw(
        `WITH RECURSIVE chain(id, prev_group, n) AS (
           SELECT id, prev_group, 0 FROM state_groups WHERE id = ?
           UNION ALL
           SELECT g.id, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_group
         ) SELECT id FROM chain ORDER BY n`,
        [id],
      );
      const list = (Array.isArray(rows) ? rows : rows.rows) as { id: number }[];
      return list.map((r) => Number(r.id));
    }
  }

  async stateGroupEntries(groupIds: readonly number[], q: Knex = this.db): Promise<(StateEntry & { group_id: number })[]> {
    if (!groupIds.length) return [];
    return q('state_group_entries as s')
      .leftJoin('events as e', 'e.event_nid', 's.event_nid')
      .whereIn('s.group_id', groupIds)
      .select('s.group_id', 's.type', 's.state_key', 'e.event_id');
  }

  // Current state and membership

  async upsertCurrentState(roomNid: number, type: string, stateKey: string, eventNid: number, q: Knex): Promise<void> {
    await q('current_state').insert({ room_nid: roomNid, type, state_key: stateKey, event_nid: eventNid })
      .onConflict(['room_nid', 'type', 'state_key']).merge(['event_nid']);
  }

  /** upsertCurrentState for many keys (each once), in multi-row statements. */
  async upsertCurrentStateMany(roomNid: number, entries: readonly { type: string; state_key: string; event_nid: number }[], q: Knex): Promise<void> {
    for (let i = 0; i < entries.length; i += 200) {
      await q('current_state').insert(entries.slice(i, i + 200).map((e) => ({ room_nid: roomNid, ...e })))
        .onConflict(['room_nid', 'type', 'state_key']).merge(['event_nid']);
    }
  }

  async replaceCurrentState(roomNid: number, entries: readonly { type: string; state_key: string; event_nid: number }[], q: Knex): Promise<void> {
    await q('current_state').where({ room_nid: roomNid }).delete();
    for (let i = 0; i < entries.length; i += 200) {
      await q('current_state').insert(entries.slice(i, i + 200).map((e) => ({ room_nid: roomNid, ...e })));
    }
  }

  async currentStateEventIds(roomNid: number, q: Knex = this.db): Promise<{ type: string; state_key: string; event_id: string }[]> {
    return q('current_state as c').join('events as e', 'e.event_nid', 'c.event_nid').where('c.room_nid', roomNid)
      .select('c.type', 'c.state_key', 'e.event_id');
  }

  async currentStateEvent(roomNid: number, type: string, stateKey: string, q: Knex = this.db): Promise<EventRow | undefined> {
    return q<EventRow>('current_state as c').join('events as e', 'e.event_nid', 'c.event_nid')
      .where({ 'c.room_nid': roomNid, 'c.type': type, 'c.state_key': stateKey }).first('e.*');
  }

  async upsertMember(row: MemberRow, q: Knex): Promise<void> {
    await q('room_members').insert(row).onConflict(['room_nid', 'user_id'])
      .merge(['membership', 'event_nid', 'stream_ordering', 'displayname', 'avatar_url', 'forgotten']);
  }

  /** upsertMember for many users (each once), in multi-row statements. */
  async upsertMembers(rows: readonly MemberRow[], q: Knex): Promise<void> {
    for (let i = 0; i < rows.length; i += 200) {
      await q('room_members').insert(rows.slice(i, i + 200)).onConflict(['room_nid', 'user_id'])
        .merge(['membership', 'event_nid', 'stream_ordering', 'displayname', 'avatar_url', 'forgotten']);
    }
  }

  async setMemberStreamOrdering(roomNid: number, userId: string, pos: number, q: Knex): Promise<void> {
    await q('room_members').where({ room_nid: roomNid, user_id: userId }).update({ stream_ordering: pos });
  }

  async members(roomNid: number, memberships?: readonly string[], q: Knex = this.db): Promise<MemberRow[]> {
    const query = q<MemberRow>('room_members').where({ room_nid: roomNid });
    if (memberships) query.whereIn('membership', memberships);
    return query;
  }

  async membership(roomNid: number, userId: string, q: Knex = this.db): Promise<MemberRow | undefined> {
    return q<MemberRow>('room_members').where({ room_nid: roomNid, user_id: userId }).first();
  }

  /** Rooms where the user's current membership is one of `memberships`. */
  async roomsOfUser(userId: string, memberships: readonly string[], q: Knex = this.db): Promise<(MemberRow & { room_id: string; room_version: string })[]> {
    return q('room_members as m').join('rooms as r', 'r.room_nid', 'm.room_nid')
      .where('m.user_id', userId).whereIn('m.membership', memberships)
      .select('m.*', 'r.room_id', 'r.room_version');
  }

  async setForgotten(roomNid: number, userId: string, q: Knex = this.db): Promise<void> {
    await q('room_members').where({ room_nid: roomNid, user_id: userId }).update({ forgotten: true });
  }

  async memberCounts(roomNid: number, q: Knex = this.db): Promise<{ joined: number; invited: number }> {
    const rows = await q('room_members').where({ room_nid: roomNid }).whereIn('membership', ['join', 'invite'])
      .groupBy('membership').select('membership').count({ n: '*' });
    let joined = 0;
    let invited = 0;
    for (const r of rows as { membership: string; n: number | string }[]) {
      if (r.membership === 'join') joined = Number(r.n);
      else invited = Number(r.n);
    }
    return { joined, invited };
  }

  // DAG

  async forwardExtremities(roomNid: number, q: Knex = this.db): Promise<{ event_id: string; depth: number }[]> {
    const rows = await q('forward_extremities as f').join('events as e', 'e.event_nid', 'f.event_nid').where('f.room_nid', roomNid)
      .select('e.event_id', 'e.depth');
    return rows.map((r: { event_id: string; depth: number | string }) => ({ event_id: r.event_id, depth: Number(r.depth) }));
  }

  /** The new event replaces its prev events as forward extremities (one UPDATE in the linear case). */
  async advanceForwardExtremities(roomNid: number, prevNids: readonly number[], addNid: number, q: Knex): Promise<void> {
    if (prevNids.length === 1) {
      const n = await q('forward_extremities').where({ room_nid: roomNid, event_nid: prevNids[0] }).update({ event_nid: addNid });
      if (n) return;
    }
    await this.replaceForwardExtremities(roomNid, prevNids, addNid, q);
  }

  async replaceForwardExtremities(roomNid: number, removeNids: readonly number[], addNid: number, q: Knex): Promise<void> {
    if (removeNids.length) await q('forward_extremities').where({ room_nid: roomNid }).whereIn('event_nid', removeNids).delete();
    await q('forward_extremities').insert({ room_nid: roomNid, event_nid: addNid }).onConflict(['room_nid', 'event_nid']).ignore();
  }

  // Relations

  async insertRelation(row: { event_nid: number; room_nid: number; relates_to: string; rel_type: string; aggregation_key: string | null }, q: Knex): Promise<void> {
    await q('event_relations').insert(row).onConflict('event_nid').ignore();
  }

  async relationsOf(parentId: string, opts: { relType?: string; eventType?: string; from?: number; dir: 'b' | 'f'; limit: number }, q: Knex = this.db): Promise<EventRow[]> {
    const query = q<EventRow>('event_relations as r').join('events as e', 'e.event_nid', 'r.event_nid')
      .where('r.relates_to', parentId).whereNotNull('e.stream_ordering').andWhere('e.soft_failed', false);
    if (opts.relType) query.andWhere('r.rel_type', opts.relType);
    if (opts.eventType) query.andWhere('e.type', opts.eventType);
    if (opts.from !== undefined) query.andWhere('e.stream_ordering', opts.dir === 'b' ? '<' : '>', opts.from);
    return query.orderBy('e.stream_ordering', opts.dir === 'b' ? 'desc' : 'asc').limit(opts.limit).select('e.*');
  }

  /** Aggregations for a set of parent events: counts, latest thread event, latest edit, references. */
  async relationSummaries(parentIds: readonly string[], q: Knex = this.db): Promise<{ relates_to: string; rel_type: string; type: string; n: number | string; last: number | string }[]> {
    if (!parentIds.length) return [];
    return q('event_relations as r').join('events as e', 'e.event_nid', 'r.event_nid')
      .whereIn('r.relates_to', parentIds as string[]).whereIn('r.rel_type', ['m.thread', 'm.replace', 'm.reference'])
      .whereNotNull('e.stream_ordering').whereNull('e.redacted_by').andWhere('e.soft_failed', false)
      .groupBy('r.relates_to', 'r.rel_type', 'e.type')
      .select('r.relates_to', 'r.rel_type', 'e.type').count({ n: '*' }).max({ last: 'e.stream_ordering' });
  }

  async threadRoots(roomNid: number, opts: { from?: number; limit: number; participatedBy?: string }, q: Knex = this.db): Promise<{ relates_to: string; last: number | string }[]> {
    const query = q('event_relations as r').join('events as e', 'e.event_nid', 'r.event_nid')
      .where('r.room_nid', roomNid).andWhere('r.rel_type', 'm.thread').whereNotNull('e.stream_ordering')
      .groupBy('r.relates_to').select('r.relates_to').max({ last: 'e.stream_ordering' });
    if (opts.participatedBy) {
      const u = opts.participatedBy;
      query.havingRaw(
        `SUM(CASE WHEN e.sender = ? THEN 1 ELSE 0 END) > 0 OR r.relates_to IN (SELECT event_id FROM events WHERE sender = ? AND room_nid = ?)`,
        [u, u, roomNid],
      );
    }
    if (opts.from !== undefined) query.havingRaw('MAX(e.stream_ordering) < ?', [opts.from]);
    return (await query.orderBy('last', 'desc').limit(opts.limit)) as unknown as { relates_to: string; last: number | string }[];
  }

  // Transactions

  async txnEvent(userId: string, deviceId: string, txnId: string, q: Knex = this.db): Promise<string | undefined> {
    const r = await q('event_txns').where({ user_id: userId, device_id: deviceId, txn_id: txnId }).first('event_id');
    return r?.event_id;
  }

  async insertTxn(userId: string, deviceId: string, txnId: string, eventId: string, q: Knex): Promise<void> {
    await q('event_txns').insert({ user_id: userId, device_id: deviceId, txn_id: txnId, event_id: eventId, created_ts: Date.now() });
  }

  // Aliases

  async roomIdByAlias(alias: string, q: Knex = this.db): Promise<string | undefined> {
    return (await q('room_aliases').where({ alias }).first('room_id'))?.room_id;
  }

  async aliasRow(alias: string, q: Knex = this.db): Promise<{ alias: string; room_id: string; creator: string } | undefined> {
    return q('room_aliases').where({ alias }).first();
  }

  async insertAlias(alias: string, roomId: string, creator: string, q: Knex = this.db): Promise<boolean> {
    const r = await q('room_aliases').insert({ alias, room_id: roomId, creator }).onConflict('alias').ignore().returning('alias');
    return r.length > 0;
  }

  async deleteAlias(alias: string, q: Knex = this.db): Promise<number> {
    return q('room_aliases').where({ alias }).delete();
  }

  /** Points every alias of `fromRoomId` at `toRoomId` (room upgrades move local aliases). */
  async moveAliases(fromRoomId: string, toRoomId: string, q: Knex = this.db): Promise<number> {
    return q('room_aliases').where({ room_id: fromRoomId }).update({ room_id: toRoomId });
  }

  async aliasesOfRoom(roomId: string, q: Knex = this.db): Promise<string[]> {
    return (await q('room_aliases').where({ room_id: roomId }).select('alias')).map((r: { alias: string }) => r.alias);
  }
}
