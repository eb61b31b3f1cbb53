// The federation outbox (queued PDUs and EDUs per destination) and per-destination delivery state:
// backoff, the sending lease, and the transaction in flight.
import type { Knex } from 'knex';
import { dialectOf } from './db.js';
import { num } from './rows.js';

export interface DestinationRow {
  destination: string;
  retry_count: number;
  next_attempt_ts: number | string;
  last_success_ts: number | string | null;
  last_failure_ts: number | string | null;
  last_error: string | null;
  lease_owner: string | null;
  sending_until: number | string;
  txn_id: string | null;
  txn_body: string | null;
  txn_pdu_ids: string | null;
  txn_edu_ids: string | null;
}

/** A queued PDU with its event's JSON; json is null when the event has gone (purged). */
export interface OutboxPduRow { id: number; event_nid: number; event_id: string | null; json: string | null }
export interface OutboxEduRow { id: number; edu_type: string; content: string }

/** A transaction being delivered, kept so a retry re-sends exactly it. */
export interface InflightTxn { txnId: string; body: string; pduIds: number[]; eduIds: number[] }

const CHUNK = 500;

export class OutboxStore {
  constructor(private readonly db: Knex) {}

  // Queueing (inside the caller's transaction)

  async insertPdus(destinations: readonly string[], eventNid: number, now: number, q: Knex): Promise<void> {
    for (let i = 0; i < destinations.length; i += CHUNK) {
      await q('federation_outbox_pdus')
        .insert(destinations.slice(i, i + CHUNK).map((d) => ({ destination: d, event_nid: eventNid, created_ts: now })))
        .onConflict(['destination', 'event_nid']).ignore();
    }
  }

  /** Queues an EDU; with a dedupe key, first removes the queued EDU with that key (it is superseded). */
  async insertEdus(destinations: readonly string[], eduType: string, content: string, dedupeKey: string | null, now: number, q: Knex): Promise<void> {
    for (let i = 0; i < destinations.length; i += CHUNK) {
      const chunk = destinations.slice(i, i + CHUNK);
      if (dedupeKey !== null) await q('federation_outbox_edus').where({ dedupe_key: dedupeKey }).whereIn('destination', chunk).delete();
      await q('federation_outbox_edus').insert(chunk.map((d) => ({ destination: d, edu_type: eduType, content, dedupe_key: dedupeKey, created_ts: now })));
    }
  }

  /** The servers with a joined member in the room (room_members: the current state). */
  async joinedServers(roomNid: number, q: Knex = this.db): Promise<string[]> {
    // The server name is everything after the first ':' of the user id (localparts have no ':');
    // SQLite spells "position of" instr(), PostgreSQL strpos().
    const pos = dialectOf(q) === 'pg' ? 'strpos(user_id, \':\')' : 'instr(user_id, \':\')';
    const rows = await q('room_members').where({ room_nid: roomNid, membership: 'join' })
      .select(q.raw(`DISTINCT substr(user_id, ${pos} + 1) AS server`));
    return rows.map((r: { server: string }) => r.server);
  }

  // Reading the queue

  async pendingPdus(destination: string, limit: number, q: Knex = this.db): Promise<OutboxPduRow[]> {
    const rows = await q('federation_outbox_pdus as o').leftJoin('events as e', 'e.event_nid', 'o.event_nid')
      .where('o.destination', destination).orderBy('o.id', 'asc').limit(limit)
      .select('o.id', 'o.event_nid', 'e.event_id', 'e.json');
    return rows.map((r: OutboxPduRow) => ({ ...r, id: Number(r.id), event_nid: Number(r.event_nid) }));
  }

  async pendingEdus(destination: string, limit: number, q: Knex = this.db): Promise<OutboxEduRow[]> {
    const rows = await q('federation_outbox_edus').where({ destination }).orderBy('id', 'asc').limit(limit)
      .select('id', 'edu_type', 'content');
    return rows.map((r: OutboxEduRow) => ({ ...r, id: Number(r.id) }));
  }

  /** Whether anything is queued for (or in flight to) the destination. */
  async hasPending(destination: string, q: Knex = this.db): Promise<boolean> {
    if (await q('federation_outbox_pdus').where({ destination }).first('id')) return true;
    if (await q('federation_outbox_edus').where({ destination }).first('id')) return true;
    return !!(await q('federation_destinations').where({ destination }).whereNotNull('txn_id').whereNotNull('txn_body').first('destination'));
  }

  /** Every destination with something queued or in flight. */
  async destinationsWithPending(q: Knex = this.db): Promise<string[]> {
    const rows = await q.select('destination').from('federation_outbox_pdus')
      .union((u) => u.select('destination').from('federation_outbox_edus'))
      .union((u) => u.select('destination').from('federation_destinations').whereNotNull('txn_id').whereNotNull('txn_body'));
    return rows.map((r: { destination: string }) => r.destination);
  }

  // Destination state

  async destination(destination: string, q: Knex = this.db): Promise<DestinationRow | undefined> {
    return q<DestinationRow>('federation_destinations').where({ destination }).first();
  }

  async destinations(names: readonly string[], q: Knex = this.db): Promise<DestinationRow[]> {
    const out: DestinationRow[] = [];
    for (let i = 0; i < names.length; i += CHUNK) out.push(...(await q<DestinationRow>('federation_destinations').whereIn('destination', names.slice(i, i + CHUNK))));
    return out;
  }

  async ensureDestination(destination: string, q: Knex = this.db): Promise<void> {
    await q('federation_destinations').insert({ destination }).onConflict('destination').ignore();
  }

  /**
   * Takes the sending lease when it is free (or expired) and the destination is not backing off.
   * One atomic UPDATE, so of two processes racing exactly one wins.
   */
  async acquireLease(destination: string, owner: string, now: number, until: number, q: Knex = this.db): Promise<boolean> {
    const n = await q('federation_destinations').where({ destination })
      .andWhere((w) => w.whereNull('lease_owner').orWhere('sending_until', '<', now))
      .andWhere('next_attempt_ts', '<=', now)
      .update({ lease_owner: owner, sending_until: until });
    return n > 0;
  }

  /** Extends a lease we hold; false when it was lost (expired and taken by another process). */
  async renewLease(destination: string, owner: string, until: number, q: Knex = this.db): Promise<boolean> {
    return (await q('federation_destinations').where({ destination, lease_owner: owner }).update({ sending_until: until })) > 0;
  }

  async releaseLease(destination: string, owner: string, q: Knex = this.db): Promise<void> {
    await q('federation_destinations').where({ destination, lease_owner: owner }).update({ lease_owner: null, sending_until: 0 });
  }

  async inflight(destination: string, q: Knex = this.db): Promise<InflightTxn | null> {
    const r = await q<DestinationRow>('federation_destinations').where({ destination }).first('txn_id', 'txn_body', 'txn_pdu_ids', 'txn_edu_ids');
    if (!r?.txn_id || r.txn_body === null) return null;
    return { txnId: r.txn_id, body: r.txn_body, pduIds: JSON.parse(r.txn_pdu_ids ?? '[]'), eduIds: JSON.parse(r.txn_edu_ids ?? '[]') };
  }

  /** Records the transaction about to be sent (only while holding the lease). */
  async saveInflight(destination: string, owner: string, txn: InflightTxn, q: Knex = this.db): Promise<boolean> {
    const n = await q('federation_destinations').where({ destination, lease_owner: owner })
      .update({ txn_id: txn.txnId, txn_body: txn.body, txn_pdu_ids: JSON.stringify(txn.pduIds), txn_edu_ids: JSON.stringify(txn.eduIds) });
    return n > 0;
  }

  /**
   * The transaction is finished with (delivered, or rejected for good): its rows leave the queue and
   * the destination has nothing in flight. Run it in a transaction.
   */
  async finishTxn(destination: string, txn: Pick<InflightTxn, 'txnId' | 'pduIds' | 'eduIds'>, delivered: { now: number } | null, q: Knex): Promise<void> {
    for (let i = 0; i < txn.pduIds.length; i += CHUNK) await q('federation_outbox_pdus').whereIn('id', txn.pduIds.slice(i, i + CHUNK)).delete();
    for (let i = 0; i < txn.eduIds.length; i += CHUNK) await q('federation_outbox_edus').whereIn('id', txn.eduIds.slice(i, i + CHUNK)).delete();
    // Only this transaction: a process that took over an expired lease may have a newer one in flight.
    await q('federation_destinations').where({ destination, txn_id: txn.txnId })
      .update({ txn_id: null, txn_body: null, txn_pdu_ids: null, txn_edu_ids: null });
    if (delivered) await q('federation_destinations').where({ destination }).update({ retry_count: 0, next_attempt_ts: 0, last_success_ts: delivered.now });
  }

  async recordFailure(destination: string, f: { retryCount: number; nextAttemptTs: number; error: string; now: number }, q: Knex = this.db): Promise<void> {
    await q('federation_destinations').where({ destination })
      .update({ retry_count: f.retryCount, next_attempt_ts: f.nextAttemptTs, last_failure_ts: f.now, last_error: f.error.slice(0, 1000) });
  }

  /** Clears the backoff; returns whether there was one. */
  async resetBackoff(destination: string, q: Knex = this.db): Promise<boolean> {
    const n = await q('federation_destinations').where({ destination })
      .andWhere((w) => w.where('retry_count', '>', 0).orWhere('next_attempt_ts', '>', 0))
      .update({ retry_count: 0, next_attempt_ts: 0 });
    return n > 0;
  }
}

export const destinationTimes = (r: DestinationRow) => ({ nextAttemptTs: num(r.next_attempt_ts), sendingUntil: num(r.sending_until) });
