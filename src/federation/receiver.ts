// Receiving PDUs and EDUs from other servers: PUT /send/{txnId} and the events fetched while
// joining or filling gaps. Every PDU passes, in order: format, signatures, content hash, auth
// against its auth events, auth against the state before it, soft-fail against the current state.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { EventsStore } from '../storage/events-store.js';
import { AuthError, checkAuth, authStateFromEvents } from '../rooms/auth-rules.js';
import { authEventIds, domainOf, eventStateKey, isPlainObject, stateKey, type PDU, type StateMap } from '../rooms/event.js';
import { eventIdOf } from '../rooms/hashing.js';
import type { RoomData, RoomInfo, StoredEvent } from '../rooms/room-data.js';
import { prevIdsOf, type PlaceOptions, type ReceivedEvents } from '../rooms/received.js';
import type { FederationRequester, KeyLookup } from './interfaces.js';
import { checkReceivedPdu, PduRejected } from './pdu-checks.js';
import { serverAllowedByAcl } from './acl.js';

export type EduHandler = (origin: string, content: Record<string, unknown>) => Promise<void>;

const MAX_PDUS = 50;
const MAX_EDUS = 100;

export class FederationReceiver {
  readonly eduHandlers = new Map<string, EduHandler>();
  private readonly inflightTxns = new Map<string, Promise<unknown>>();

  constructor(
    private readonly db: Knex,
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly received: ReceivedEvents,
    private readonly keys: KeyLookup,
    private readonly client: FederationRequester,
    private readonly serverName: string,
    private readonly logger: Logger,
  ) {}

  /** PUT /_matrix/federation/v1/send/{txnId}: idempotent per (origin, txnId). */
  async onTransaction(origin: string, txnId: string, body: { pdus?: unknown[]; edus?: unknown[] }): Promise<{ pdus: Record<string, { error?: string }> }> {
    const key = `${origin}\u0000${txnId}`;
    const stored = await this.db('federation_txns').where({ origin, txn_id: txnId }).first('response');
    if (stored) return JSON.parse(stored.response);
    const running = this.inflightTxns.get(key);
    if (running) return running as Promise<{ pdus: Record<string, { error?: string }> }>;
    const task = (async () => {
      const pdus = Array.isArray(body.pdus) ? body.pdus : [];
      const edus = Array.isArray(body.edus) ? body.edus : [];
      if (pdus.length > MAX_PDUS || edus.length > MAX_EDUS) throw new PduRejected(`a transaction carries at most ${MAX_PDUS} PDUs and ${MAX_EDUS} EDUs`);
      const results: Record<string, { error?: string }> = {};
      // PDUs of one room in order; rooms in parallel.
      const byRoom = new Map<string, unknown[]>();
      for (const p of pdus) {
        const roomId = isPlainObject(p) && typeof p.room_id === 'string' ? p.room_id : '';
        const list = byRoom.get(roomId);
        if (list) list.push(p);
        else byRoom.set(roomId, [p]);
      }
      await Promise.all([...byRoom.entries()].map(([roomId, list]) => this.receiveRoomPdus(origin, roomId, list, results)));
      for (const e of edus) {
        if (!isPlainObject(e) || typeof e.edu_type !== 'string' || !isPlainObject(e.content)) continue;
        const handler = this.eduHandlers.get(e.edu_type);
        if (!handler) continue;
        await handler(origin, e.content).catch((err) => this.logger.info({ origin, type: e.edu_type, err: (err as Error).message }, 'EDU not processed'));
      }
      const response = { pdus: results };
      await this.db('federation_txns').insert({ origin, txn_id: txnId, response: JSON.stringify(response), received_ts: Date.now() }).onConflict(['origin', 'txn_id']).ignore();
      return response;
    })();
    this.inflightTxns.set(key, task);
    try {
      return await task;
    } finally {
      this.inflightTxns.delete(key);
    }
  }

  /**
   * Fetches history older than the oldest events we have (GET /backfill from a server in the
   * room) and places it below every live event. Returns how many events were added.
   */
  async backfill(room: RoomInfo, limit: number): Promise<number> {
    const oldest = await this.store.oldestEvents(room.nid, 5);
    if (!oldest.length) return 0;
    const stored = await this.data.fromRows(oldest);
    const prevIds = [...new Set(stored.flatMap((e) => prevIdsOf(e.pdu)))];
    const known = await this.data.eventsMap(prevIds);
    const missing = prevIds.filter((id) => !known.get(id) || known.get(id)!.outlier);
    if (!missing.length) return 0;
    const servers = [...new Set((await this.data.joinedMembers(room)).map((m) => domainOf(m.user_id)).filter((x): x is string => !!x && x !== this.serverName))];
    // The state before our earliest event stands in for the state of what came before it (history
    // visibility then judges the backfilled events by the room's settings at that point).
    const earliest = stored[0];
    const baseState = new Map(await this.data.stateOfGroup(earliest.stateGroup));
    const ownKey = eventStateKey(earliest.pdu);
    if (ownKey && baseState.get(ownKey) === earliest.eventId) {
      if (earliest.replacesState) baseState.set(ownKey, earliest.replacesState);
      else baseState.delete(ownKey);
    }
    for (const server of servers) {
      let res: { pdus?: unknown[] };
      try {
        res = await this.client.request(server, 'GET', `/_matrix/federation/v1/backfill/${encodeURIComponent(room.roomId)}`, { query: { v: missing, limit: String(limit) } });
      } catch (err) {
        this.logger.info({ server, err: (err as Error).message }, 'backfill failed');
        continue;
      }
      const pdus = (Array.isArray(res.pdus) ? res.pdus : []).filter(isPlainObject) as PDU[];
      pdus.sort((a, b) => a.depth - b.depth);
      let added = 0;
      for (const raw of pdus) {
        try {
          const { pdu, eventId } = await checkReceivedPdu(raw, room.version, this.keys);
          if (pdu.room_id !== room.roomId) continue;
          const existing = await this.data.event(eventId);
          if (existing && !existing.outlier) continue;
          const authEvents = await this.authEventsOf(room, server, pdu);
          let rejected: string | null = null;
          try {
            checkAuth(pdu, authStateFromEvents([...authEvents.values()], await this.createEventOf(room, authEvents)), room.version, { authEvents: [...authEvents.values()] });
          } catch (err) {
            if (!(err instanceof AuthError)) throw err;
            rejected = err.reason;
          }
          await this.received.place(room, pdu, { stateBefore: baseState, rejectedReason: rejected, backfilled: true });
          if (!rejected) added++;
        } catch (err) {
          this.logger.info({ server, err: (err as Error).message }, 'backfilled event not accepted');
        }
      }
      if (added) return added;
    }
    return 0;
  }

  /** The id a rejected PDU is reported under: its reference hash when the room version is known. */
  private async guessEventId(raw: unknown): Promise<string> {
    if (!isPlainObject(raw)) return '';
    if (typeof raw.event_id === 'string') return raw.event_id;
    const room = typeof raw.room_id === 'string' ? await this.data.room(raw.room_id) : undefined;
    if (!room) return '';
    try {
      return eventIdOf(raw as PDU, room.version);
    } catch {
      return '';
    }
  }

  /**
   * The PDUs of one room from one transaction, in order. Format, signatures and hashes are checked
   * for all of them at once (signatures on the thread pool); then runs of PDUs whose prev and auth
   * events are all known are checked and placed in one database transaction (one commit), and a
   * PDU that needs another server (missing prev or auth events) takes the path that fetches them.
   */
  private async receiveRoomPdus(origin: string, roomId: string, list: unknown[], results: Record<string, { error?: string }>): Promise<void> {
    const fail = async (raw: unknown, err: unknown, id = '') => {
      const msg = err instanceof Error ? err.message : String(err);
      if (!id) id = await this.guessEventId(raw);
      if (id) results[id] = { error: msg };
      this.logger.info({ origin, eventId: id, err: msg }, 'PDU not accepted');
    };
    const room = roomId ? await this.data.room(roomId) : undefined;
    if (!room) {
      for (const raw of list) await fail(raw, new PduRejected(roomId ? 'this server is not in the room' : 'PDU has no room_id'));
      return;
    }
    const checked = await Promise.all(list.map((raw) => checkReceivedPdu(raw, room.version, this.keys).then(
      (ok) => ({ raw, ok, err: undefined }),
      (err: unknown) => ({ raw, ok: undefined, err }),
    )));
    let i = 0;
    while (i < checked.length) {
      // A run placed without leaving this server, in one commit.
      let n = 0;
      const done: Record<string, { error?: string }> = {};
      try {
        n = await this.received.inRoomTransaction(room, async (put, trx) => {
          let k = 0;
          for (; i + k < checked.length; k++) {
            const c = checked[i + k];
            if (!c.ok) continue;
            try {
              done[await this.accept(origin, room, c.ok, { q: trx, put, offline: true })] = {};
            } catch (err) {
              if (err instanceof NeedsAnotherServer) break;
              if (!(err instanceof PduRejected)) throw err;
              done[c.ok.eventId] = { error: err.message };
            }
          }
          return k;
        });
      } catch (err) {
        // Rolled back: these go one by one below.
        this.logger.warn({ origin, roomId, err: (err as Error).message }, 'placing a run of PDUs failed; retrying them one by one');
        n = 0;
        for (const id of Object.keys(done)) delete done[id];
      }
      for (let k = 0; k < n; k++) {
        const c = checked[i + k];
        if (!c.ok) await fail(c.raw, c.err);
      }
      for (const [id, r] of Object.entries(done)) {
        results[id] = r;
        if (r.error) this.logger.info({ origin, eventId: id, err: r.error }, 'PDU not accepted');
      }
      i += n;
      if (i >= checked.length) break;
      // The next one needs another server (or the run failed): alone, fetching what it needs.
      const c = checked[i++];
      if (!c.ok) {
        await fail(c.raw, c.err);
        continue;
      }
      try {
        results[await this.accept(origin, room, c.ok, {})] = {};
      } catch (err) {
        await fail(c.raw, err, c.ok.eventId);
      }
    }
  }

  /** Runs every check on one PDU and places it in its room. Returns its event id. */
  async receivePdu(origin: string, raw: unknown, opts: { fetchMissing?: boolean } = {}): Promise<string> {
    const roomId = isPlainObject(raw) && typeof raw.room_id === 'string' ? raw.room_id : undefined;
    if (!roomId) throw new PduRejected('PDU has no room_id');
    const room = await this.data.room(roomId);
    if (!room) throw new PduRejected('this server is not in the room');
    return this.accept(origin, room, await checkReceivedPdu(raw, room.version, this.keys), { fetchMissing: opts.fetchMissing });
  }

  /**
   * The checks after format, signatures and hashes: auth against the auth events, against the
   * state before, soft-fail against the current state; then the event is placed. With `offline`
   * (inside a transaction `q`, placing through `put`), nothing is fetched from other servers: a
   * missing prev or auth event throws NeedsAnotherServer before anything is written.
   */
  private async accept(origin: string, room: RoomInfo, checked: { pdu: PDU; eventId: string }, mode: AcceptMode): Promise<string> {
    const { pdu, eventId } = checked;
    const q = mode.q ?? this.db;
    const existing = await this.data.event(eventId, q);
    if (existing && !existing.outlier) return eventId;
    const senderServer = domainOf(pdu.sender);
    if (!senderServer) throw new PduRejected('bad sender');

    // Server ACLs apply to the sending server (spec: "Server Access Control Lists").
    const current = mode.q ? await this.received.currentStateIn(room, mode.q) : await this.data.currentState(room);
    if (!(await serverAllowedByAcl(this.data, current, origin, q))) throw new PduRejected(`server ${origin} is denied by the room's ACL`);

    // Auth against the event's own auth events.
    const authEvents = await this.authEventsOf(room, origin, pdu, mode);
    let rejected: string | null = null;
    try {
      checkAuth(pdu, authStateFromEvents([...authEvents.values()], await this.createEventOf(room, authEvents, q)), room.version, { authEvents: [...authEvents.values()] });
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      rejected = `auth events: ${err.reason}`;
    }

    // Auth against the state before the event.
    const stateBefore = await this.stateBefore(room, origin, pdu, eventId, mode);
    if (!rejected) {
      const stateEvents = await this.data.stateEvents(stateBefore, stateKeysFor(pdu), q);
      const lookup = (t: string, k: string) => stateEvents.get(stateKey(t, k))?.pdu;
      try {
        checkAuth(pdu, lookup, room.version);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        rejected = `state before: ${err.reason}`;
      }
    }

    // Soft-fail against the current state: stored, but neither shown nor built upon.
    let softFailed = false;
    if (!rejected) {
      const now = mode.q ? current : await this.data.currentState(room);
      const nowEvents = await this.data.stateEvents(now, stateKeysFor(pdu), q);
      try {
        checkAuth(pdu, (t, k) => nowEvents.get(stateKey(t, k))?.pdu, room.version);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        softFailed = true;
      }
    }
    const placeOpts: PlaceOptions = { stateBefore, rejectedReason: rejected, softFailed };
    if (mode.q) placeOpts.lookedUp = existing ?? null;
    if (mode.put) await mode.put(pdu, placeOpts);
    else await this.received.place(room, pdu, placeOpts);
    if (rejected) throw new PduRejected(rejected);
    return eventId;
  }

  private async createEventOf(room: RoomInfo, authEvents: Map<string, PDU>, q: Knex = this.db): Promise<PDU | undefined> {
    for (const e of authEvents.values()) if (e.type === 'm.room.create') return e;
    // Room v12: the create event is implied by the room id.
    if (room.version.roomIdFromCreateEvent) return (await this.data.event(`$${room.roomId.slice(1)}`, q))?.pdu;
    return undefined;
  }

  /** The event's auth events, fetching (and checking, and storing as outliers) what is missing. */
  private async authEventsOf(room: RoomInfo, origin: string, pdu: PDU, mode: AcceptMode = {}): Promise<Map<string, PDU>> {
    const ids = authEventIds(pdu);
    let known = await this.data.eventsMap(ids, mode.q);
    if (known.size < ids.length) {
      if (mode.offline) throw new NeedsAnotherServer();
      const eventId = eventIdOf(pdu, room.version);
      const res = await this.client.request<{ auth_chain?: unknown[] }>(origin, 'GET', `/_matrix/federation/v1/event_auth/${encodeURIComponent(room.roomId)}/${encodeURIComponent(eventId)}`);
      await this.storeCheckedOutliers(room, Array.isArray(res.auth_chain) ? res.auth_chain : []);
      known = await this.data.eventsMap(ids);
    }
    const out = new Map<string, PDU>();
    for (const id of ids) {
      const ev = known.get(id);
      if (!ev) throw new PduRejected(`auth event ${id} could not be fetched`);
      if (ev.rejected) throw new PduRejected(`auth event ${id} was rejected`);
      out.set(id, ev.pdu);
    }
    return out;
  }

  /**
   * Checks a batch of events (an auth chain or a room state) and stores them as outliers: each must
   * be validly signed and pass auth against its own auth events (oldest first).
   */
  async storeCheckedOutliers(room: RoomInfo, raws: readonly unknown[]): Promise<Map<string, PDU>> {
    const checked = new Map<string, PDU>();
    // Events already stored were checked when they were (a join's state repeats its auth chain).
    const idOf = (raw: unknown) => {
      try {
        return isPlainObject(raw) ? eventIdOf(raw as PDU, room.version) : undefined;
      } catch {
        return undefined;
      }
    };
    const ids = raws.map(idOf);
    const stored = await this.data.eventsMap(ids.filter((x): x is string => !!x));
    const fresh = raws.filter((_, i) => !ids[i] || !stored.has(ids[i]!));
    const result = new Map<string, PDU>();
    for (const [id, ev] of stored) if (!ev.rejected) result.set(id, ev.pdu);
    // Signatures are verified on the thread pool, a slice at a time.
    for (let i = 0; i < fresh.length; i += 128) {
      const slice = await Promise.all(fresh.slice(i, i + 128).map((raw) => checkReceivedPdu(raw, room.version, this.keys).catch((err: unknown) => {
        this.logger.info({ err: (err as Error).message }, 'dropped an event of an auth chain or state');
        return undefined;
      })));
      for (const c of slice) if (c && (c.pdu.room_id === undefined || c.pdu.room_id === room.roomId)) checked.set(c.eventId, c.pdu);
    }
    const sorted = [...checked.entries()].sort((a, b) => a[1].depth - b[1].depth);
    const rejected = new Map<string, string>();
    const known = await this.data.eventsMap(new Set(sorted.flatMap(([, p]) => authEventIds(p)).filter((id) => !checked.has(id))));
    const lookupEvent = (id: string) => checked.get(id) ?? known.get(id)?.pdu;
    let create: PDU | undefined;
    for (const [, p] of sorted) if (p.type === 'm.room.create') create = p;
    create ??= room.version.roomIdFromCreateEvent ? lookupEvent(`$${room.roomId.slice(1)}`) ?? (await this.data.event(`$${room.roomId.slice(1)}`))?.pdu : undefined;
    for (const [id, p] of sorted) {
      const auth = authEventIds(p).map(lookupEvent).filter((x): x is PDU => !!x);
      try {
        if (auth.length < authEventIds(p).length) throw new AuthError('missing auth events');
        checkAuth(p, authStateFromEvents(auth, create), room.version, { authEvents: auth });
      } catch (err) {
        rejected.set(id, err instanceof Error ? err.message : 'rejected');
        this.logger.info({ id, type: p.type, reason: err instanceof Error ? err.message : err }, 'outlier rejected');
      }
    }
    await this.received.storeOutliers(room, sorted.map(([, p]) => p), rejected);
    for (const [id, p] of checked) result.set(id, p);
    return result;
  }

  /** The state before `pdu`: resolved from its prev events' states, filling gaps from `origin`. */
  private async stateBefore(room: RoomInfo, origin: string, pdu: PDU, eventId: string, mode: AcceptMode): Promise<StateMap> {
    const prevIds = prevIdsOf(pdu);
    let prevs = await this.data.eventsMap(prevIds, mode.q);
    let missing = prevIds.filter((id) => !prevs.get(id) || prevs.get(id)!.outlier || prevs.get(id)!.stateGroup === null);
    if (missing.length && mode.offline) throw new NeedsAnotherServer();
    if (missing.length && mode.fetchMissing !== false) {
      await this.fetchMissingEvents(room, origin, pdu, eventId);
      prevs = await this.data.eventsMap(prevIds);
      missing = prevIds.filter((id) => !prevs.get(id) || prevs.get(id)!.outlier);
    }
    const sets: StateMap[] = [];
    for (const id of prevIds) {
      const prev = prevs.get(id);
      if (prev && !prev.outlier && prev.stateGroup !== null) {
        sets.push(await this.data.stateOfGroup(prev.stateGroup, mode.q));
      } else {
        sets.push(await this.stateAfterRemote(room, origin, id));
      }
    }
    return this.received.resolve(room, sets, mode.q);
  }

  /** GET /get_missing_events between our extremities and the event; receives what comes back. */
  private async fetchMissingEvents(room: RoomInfo, origin: string, pdu: PDU, eventId: string): Promise<void> {
    const head = await this.store.roomHead(room.nid);
    const minDepth = Math.max(0, Math.min(...head.extremities.map((e) => e.depth), pdu.depth) - 10);
    try {
      const res = await this.client.request<{ events?: unknown[] }>(origin, 'POST', `/_matrix/federation/v1/get_missing_events/${encodeURIComponent(room.roomId)}`, {
        body: { earliest_events: head.extremities.map((e) => e.event_id), latest_events: [eventId], limit: 20, min_depth: minDepth },
      });
      const events = (Array.isArray(res.events) ? res.events : []).filter(isPlainObject) as PDU[];
      events.sort((a, b) => a.depth - b.depth);
      for (const e of events) {
        // A v12 create event has no room_id; the room's own create event is already stored.
        if (e.type === 'm.room.create' && e.room_id === undefined) continue;
        await this.receivePdu(origin, e, { fetchMissing: false }).catch((err) => this.logger.info({ err: (err as Error).message }, 'missing event not accepted'));
      }
    } catch (err) {
      this.logger.info({ origin, err: (err as Error).message }, 'get_missing_events failed');
    }
  }

  /** The state after a prev event we do not have in the DAG, from the origin's /state_ids. */
  private async stateAfterRemote(room: RoomInfo, origin: string, prevId: string): Promise<StateMap> {
    const res = await this.client.request<{ pdu_ids?: string[]; auth_chain_ids?: string[] }>(origin, 'GET', `/_matrix/federation/v1/state_ids/${encodeURIComponent(room.roomId)}`, { query: { event_id: prevId } });
    const ids = [...(res.pdu_ids ?? []), ...(res.auth_chain_ids ?? []), prevId];
    const known = await this.data.eventsMap(ids);
    const fetch = ids.filter((id) => !known.has(id));
    const fetched: unknown[] = [];
    for (const id of fetch) {
      try {
        const r = await this.client.request<{ pdus?: unknown[] }>(origin, 'GET', `/_matrix/federation/v1/event/${encodeURIComponent(id)}`);
        if (Array.isArray(r.pdus)) fetched.push(...r.pdus);
      } catch (err) {
        this.logger.info({ id, err: (err as Error).message }, 'could not fetch a state event');
      }
    }
    await this.storeCheckedOutliers(room, fetched);
    const all = await this.data.eventsMap(ids);
    const state: StateMap = new Map();
    for (const id of res.pdu_ids ?? []) {
      const ev = all.get(id);
      const k = ev ? eventStateKey(ev.pdu) : undefined;
      if (k && !ev!.rejected) state.set(k, id);
    }
    const prev = all.get(prevId);
    const pk = prev ? eventStateKey(prev.pdu) : undefined;
    if (pk && !prev!.rejected) state.set(pk, prevId);
    return state;
  }
}

interface AcceptMode {
  /** Read through this transaction (the one `put` writes in). */
  q?: Knex;
  put?: (pdu: PDU, opts: PlaceOptions) => Promise<StoredEvent>;
  /** Never ask another server: throw NeedsAnotherServer instead. */
  offline?: boolean;
  /** When prev events are missing, ask the origin with /get_missing_events (default true). */
  fetchMissing?: boolean;
}

/** Thrown (before any write) when an event cannot be checked without another server. */
class NeedsAnotherServer extends Error {}

/** The state keys checkAuth may consult for an event. */
function stateKeysFor(pdu: PDU): string[] {
  const keys = [stateKey('m.room.create', ''), stateKey('m.room.power_levels', ''), stateKey('m.room.join_rules', ''), stateKey('m.room.member', pdu.sender)];
  if (pdu.type === 'm.room.member' && typeof pdu.state_key === 'string') {
    keys.push(stateKey('m.room.member', pdu.state_key));
    const via = pdu.content?.join_authorised_via_users_server;
    if (typeof via === 'string') keys.push(stateKey('m.room.member', via));
    const tpi = pdu.content?.third_party_invite as { signed?: { token?: unknown } } | undefined;
    if (typeof tpi?.signed?.token === 'string') keys.push(stateKey('m.room.third_party_invite', tpi.signed.token));
  }
  return keys;
}


