// Sends PDUs and EDUs to other servers (server-server API, "Transactions": PUT /send/{txnId}).
//
// Ordering lives in the database: an event's outbox rows (one per destination) are written in the
// event's own transaction by the persist hook below, EDUs are written by enqueueEdu. A
// `federation-send` job per destination drains them: one transaction in flight per destination
// (a lease row shared by every process), oldest first, 50 PDUs and 100 EDUs at most, retried with
// a persisted exponential backoff. The job queue only wakes the drain; after a restart every
// destination with queued rows is woken again, so nothing queued is lost.
//
// Failure policy (the spec says only "retry until 200" and that per-PDU errors are in the body):
// - network error, timeout, 5xx, 408, 429: retry the same transaction (same txn id, same body, as
//   the spec requires before any other txn id is used) after 5 s, 10 s, ... capped at 1 h;
//   429's retry_after_ms is honoured. The backoff is persisted, so a restart does not reset it;
//   markDestinationUp() (we heard from the server) does.
// - any other 4xx: the destination refuses this transaction as such, and re-sending the same bytes
//   would be refused forever. It is logged and dropped; the remote fetches PDUs it missed through
//   prev_events (get_missing_events / backfill) when our next event reaches it.
// - per-PDU errors in a 200 response: logged, not retried (the remote has judged those events).
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { JobQueue } from '../jobs/queue.js';
import type { StateMap } from '../rooms/event.js';
import type { PersistHooks } from '../rooms/persist.js';
import type { RoomInfo, StoredEvent } from '../rooms/room-data.js';
import { isUniqueViolation } from '../storage/db.js';
import { destinationTimes, type InflightTxn, type OutboxStore } from '../storage/outbox-store.js';

// Transport

export interface TransactionBody { origin: string; origin_server_ts: number; pdus: object[]; edus: object[] }
export interface TransactionResponse { pdus: Record<string, { error?: string }> }

/** Delivers one transaction. Throws on failure, with an HTTP status where there was a response. */
export interface TransactionTransport {
  sendTransaction(destination: string, txnId: string, body: TransactionBody): Promise<TransactionResponse>;
  /** We heard from the destination: forget any transport-level backoff for it. */
  markUp?(destination: string): void;
}

/** A failed delivery. `status` is null for network errors and timeouts. */
export class TransportError extends Error {
  constructor(message: string, readonly status: number | null = null, readonly retryAfterMs?: number) {
    super(message);
    this.name = 'TransportError';
  }
}

/** The part of FederationClient (src/federation/client.ts) the adapter needs. */
export interface TransactionClient {
  request(destination: string, method: string, path: string, opts?: { body?: unknown; timeoutMs?: number; ignoreBackoff?: boolean }): Promise<unknown>;
  markUp?(destination: string): void;
}

/**
 * Sends transactions through the signing FederationClient. Its errors are understood as they are:
 * FederationError carries `status` (and the body, for 429's retry_after_ms), DestinationUnavailable
 * carries `retryAt`.
 */
export class FederationClientTransport implements TransactionTransport {
  constructor(private readonly client: TransactionClient, private readonly timeoutMs = 60_000) {}

  async sendTransaction(destination: string, txnId: string, body: TransactionBody): Promise<TransactionResponse> {
    // The sender keeps its own backoff (persisted, shared by every process), so the client's
    // in-memory one is not applied on top of it.
    const res = await this.client.request(destination, 'PUT', `/_matrix/federation/v1/send/${encodeURIComponent(txnId)}`, { body, timeoutMs: this.timeoutMs, ignoreBackoff: true });
    // Accept either a parsed body or a { status, body } response, whichever the client returns.
    let payload = res as { status?: unknown; body?: unknown; pdus?: unknown } | null;
    if (payload && typeof payload.status === 'number' && 'body' in payload) {
      if (payload.status !== 200) throw new TransportError(`HTTP ${payload.status}`, payload.status);
      payload = payload.body as typeof payload;
    }
    const pdus = payload && typeof payload.pdus === 'object' && payload.pdus !== null ? payload.pdus as TransactionResponse['pdus'] : {};
    return { pdus };
  }

  markUp(destination: string): void {
    this.client.markUp?.(destination);
  }
}

/** Until a federation client is wired in: every delivery fails (and is retried with backoff). */
export class UnavailableTransport implements TransactionTransport {
  async sendTransaction(): Promise<TransactionResponse> {
    throw new TransportError('no federation client configured');
  }
}

/** How a delivery failure is handled: retried (with backoff) or dropped. */
export function classifyFailure(err: unknown): { retry: boolean; status: number | null; retryAfterMs?: number; message: string } {
  const e = (err ?? {}) as Record<string, unknown>;
  const pick = (...vals: unknown[]) => vals.find((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const response = e.response as Record<string, unknown> | undefined;
  const body = (e.body ?? response?.body) as Record<string, unknown> | undefined;
  const status = pick(e.status, e.statusCode, e.httpStatus, response?.status) ?? null;
  const retryAt = pick(e.retryAt);
  const retryAfterMs = pick(e.retryAfterMs, e.retry_after_ms, body?.retry_after_ms, retryAt === undefined ? undefined : Math.max(0, retryAt - Date.now()));
  const message = err instanceof Error ? err.message : String(err);
  const retry = status === null || status >= 500 || status === 408 || status === 429 || status < 400;
  return { retry, status, retryAfterMs, message };
}

// The sender

export interface Edu { edu_type: string; content: Record<string, unknown> }

export interface FederationSenderOptions {
  maxPdusPerTxn: number;
  maxEdusPerTxn: number;
  /** First retry delay after a failure; doubles per consecutive failure. */
  minBackoffMs: number;
  maxBackoffMs: number;
  /** Random extra delay, as a fraction of the backoff, so retries to a returning server spread out. */
  backoffJitter: number;
  /** How long a sending lease lasts without renewal: longer than one transaction's timeout. */
  leaseMs: number;
  /** How often to look for destinations with queued rows and no wake-up (lost ones: crash, Redis down). */
  sweepIntervalMs: number;
}

export const defaultSenderOptions: FederationSenderOptions = {
  maxPdusPerTxn: 50, // spec: a transaction carries at most 50 PDUs and 100 EDUs
  maxEdusPerTxn: 100,
  minBackoffMs: 5_000,
  maxBackoffMs: 3_600_000,
  backoffJitter: 0.1,
  leaseMs: 120_000,
  sweepIntervalMs: 60_000,
};

type DrainOutcome = 'empty' | 'backoff' | 'stopped' | 'lost';

export const FEDERATION_SEND = 'federation-send';

export class FederationSender implements PersistHooks {
  readonly options: FederationSenderOptions;
  private readonly log: Logger;
  /** Destinations to wake once the event's transaction commits. */
  private readonly toWake = new WeakMap<StoredEvent, string[]>();
  private sweeper: NodeJS.Timeout | null = null;
  private stopping = false;

  constructor(
    private readonly db: Knex,
    private readonly store: OutboxStore,
    private readonly jobs: JobQueue,
    private transport: TransactionTransport,
    readonly serverName: string,
    logger: Logger,
    options: Partial<FederationSenderOptions> = {},
  ) {
    this.options = { ...defaultSenderOptions, ...options };
    this.log = logger.child({ module: 'federation-sender' });
  }

  /** Replaces the transport (e.g. once the federation client is built). */
  /** Servers with joined members, from a cache (RoomData's member lists); wired in main.ts. */
  cachedJoinedServers: ((room: RoomInfo, trx: Knex) => Promise<string[]>) | null = null;

  setTransport(transport: TransactionTransport): void {
    this.transport = transport;
  }

  // Queueing PDUs: the persist hook

  /**
   * For an event sent by one of our users: an outbox row for every other server with a joined
   * member (room_members, already the state after the event), plus, for a membership change of a
   * remote user (invite, knock, kick, ban), that user's server. Events from other servers are not
   * relayed.
   */
  async inTransaction(trx: Knex, ev: StoredEvent, room: RoomInfo, _stateBefore: StateMap): Promise<void> {
    const pdu = ev.pdu;
    if (serverOf(pdu.sender) !== this.serverName) return;
    // The room's servers from the cached member list when the event does not change membership.
    const servers = new Set(this.cachedJoinedServers && pdu.type !== 'm.room.member'
      ? await this.cachedJoinedServers(room, trx)
      : await this.store.joinedServers(room.nid, trx));
    if (pdu.type === 'm.room.member' && typeof pdu.state_key === 'string') {
      const m = pdu.content?.membership;
      const target = serverOf(pdu.state_key);
      if (target && (m === 'invite' || m === 'knock' || m === 'leave' || m === 'ban')) servers.add(target);
    }
    servers.delete(this.serverName);
    if (!servers.size) return;
    const list = [...servers].sort();
    await this.store.insertPdus(list, ev.nid, Date.now(), trx);
    this.toWake.set(ev, list);
  }

  afterCommit(ev: StoredEvent): void {
    const list = this.toWake.get(ev);
    if (!list) return;
    this.toWake.delete(ev);
    for (const d of list) void this.wake(d);
  }

  /**
   * Sends an event that came from another server to the room's other servers: the resident server
   * relays a join (or leave/knock) it accepted through send_join, since the joining server cannot.
   */
  async relayEvent(ev: StoredEvent, room: RoomInfo, except: readonly string[]): Promise<void> {
    const servers = (await this.store.joinedServers(room.nid)).filter((s) => s !== this.serverName && !except.includes(s)).sort();
    if (!servers.length) return;
    await this.store.insertPdus(servers, ev.nid, Date.now(), this.db);
    for (const d of servers) void this.wake(d);
  }

  /** The other servers with a joined member in a room: where a room's EDUs (typing, receipts) go. */
  async destinationsForRoom(roomNid: number, q: Knex = this.db): Promise<string[]> {
    return (await this.store.joinedServers(roomNid, q)).filter((s) => s !== this.serverName);
  }

  // Queueing EDUs

  /**
   * Queues an EDU for one or more servers (typing, receipts, presence, device lists, to-device).
   * With `dedupeKey`, a queued EDU with the same key for the same destination is replaced (e.g.
   * `typing:<room id>`). With `trx` (the outermost transaction), the rows are written in it and the
   * destinations are woken once it commits.
   */
  async enqueueEdu(destinations: string | readonly string[], edu: Edu, opts: { dedupeKey?: string; trx?: Knex } = {}): Promise<void> {
    const list = [...new Set(typeof destinations === 'string' ? [destinations] : destinations)].filter((d) => d && d !== this.serverName).sort();
    if (!list.length) return;
    const content = JSON.stringify(edu.content ?? {});
    const base = opts.trx ?? this.db;
    for (let attempt = 0; ; attempt++) {
      try {
        // A savepoint inside the caller's transaction: a dedupe race with another process (two
        // inserts of one key) is retried here instead of aborting the caller's transaction.
        await base.transaction((t) => this.store.insertEdus(list, edu.edu_type, content, opts.dedupeKey ?? null, Date.now(), t));
        break;
      } catch (err) {
        if (attempt < 3 && opts.dedupeKey !== undefined && isUniqueViolation(err)) continue;
        throw err;
      }
    }
    const committed = (opts.trx as Partial<Knex.Transaction> | undefined)?.executionPromise;
    if (committed) committed.then(() => this.wakeAll(list), () => undefined);
    else this.wakeAll(list);
  }

  // Waking

  /** Schedules a drain of the destination's queue (now, or after `delayMs`). */
  async wake(destination: string, delayMs = 0): Promise<void> {
    try {
      await this.jobs.add(FEDERATION_SEND, { destination }, { jobId: `${FEDERATION_SEND}:${destination}`, delayMs });
    } catch (err) {
      // The rows are safe in the database; the periodic sweep wakes the destination later.
      this.log.warn({ destination, err: (err as Error).message }, 'could not enqueue a federation-send job');
    }
  }

  private wakeAll(list: readonly string[]): void {
    for (const d of list) void this.wake(d);
  }

  /**
   * Wakes the destination's queue now. A destination still backing off stays so (the drain
   * reschedules itself); markDestinationUp() is the one that clears the backoff.
   */
  async catchUp(destination: string): Promise<void> {
    await this.wake(destination);
  }

  /**
   * The destination is reachable again (e.g. it just sent us a transaction): forget its backoff and
   * send what is queued for it. Cheap when it was not backing off.
   */
  async markDestinationUp(server: string): Promise<void> {
    if (server === this.serverName) return;
    this.transport.markUp?.(server);
    if (await this.store.resetBackoff(server)) await this.catchUp(server);
  }

  /** Wakes every destination with queued rows, at its backoff time. Returns how many. */
  async sweep(): Promise<number> {
    const names = await this.store.destinationsWithPending();
    if (!names.length) return 0;
    const rows = new Map((await this.store.destinations(names)).map((r) => [r.destination, r]));
    const now = Date.now();
    for (const d of names) {
      const r = rows.get(d);
      const t = r ? destinationTimes(r) : { nextAttemptTs: 0, sendingUntil: 0 };
      // A lease held by another process: look again when it would expire, in case that process died.
      const at = Math.max(t.nextAttemptTs, r?.lease_owner ? t.sendingUntil + 1000 : 0);
      await this.wake(d, Math.max(0, at - now));
    }
    return names.length;
  }

  /** Wakes everything left queued (e.g. from before a restart), then sweeps periodically. */
  start(): void {
    this.stopping = false;
    const run = () => this.sweep().catch((err: Error) => this.log.warn({ err: err.message }, 'federation outbox sweep failed'));
    void run();
    if (this.options.sweepIntervalMs > 0) {
      this.sweeper = setInterval(run, this.options.sweepIntervalMs);
      this.sweeper.unref();
    }
  }

  /** Running drains finish their current transaction and stop. */
  stop(): void {
    this.stopping = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
  }

  // Draining (the federation-send job)

  /**
   * Delivers what is queued for `destination`, one transaction at a time, until the queue is empty,
   * the destination fails (then a retry is scheduled), or we stop. Idempotent: a drain that finds
   * another process holding the lease, or nothing to send, returns at once.
   */
  async drain(destination: string): Promise<void> {
    const owner = randomBytes(9).toString('base64url');
    let contended = 0;
    for (;;) {
      if (this.stopping) return;
      if (!(await this.store.hasPending(destination))) return;
      await this.store.ensureDestination(destination);
      const now = Date.now();
      if (!(await this.store.acquireLease(destination, owner, now, now + this.options.leaseMs))) {
        const row = await this.store.destination(destination);
        if (!row) return;
        const t = destinationTimes(row);
        if (t.nextAttemptTs > now) {
          await this.wake(destination, t.nextAttemptTs - now);
          return;
        }
        if (row.lease_owner !== null && t.sendingUntil >= now) {
          // Held by another drain, which looks again after releasing it; this wake-up only
          // matters if that process dies holding the lease.
          await this.wake(destination, t.sendingUntil - now + 1000);
          return;
        }
        // Released (or its backoff ended) in between: try again, a few times.
        if (++contended > 3) {
          await this.wake(destination, 1000);
          return;
        }
        continue;
      }
      let outcome: DrainOutcome;
      try {
        outcome = await this.sendWhileLeased(destination, owner);
      } finally {
        await this.store.releaseLease(destination, owner).catch((err: Error) => this.log.warn({ destination, err: err.message }, 'could not release a sending lease'));
      }
      // Rows queued while we held the lease may have had their wake-up swallowed by the lease
      // check above (in another process): look again now that it is released.
      if (outcome !== 'empty') return;
    }
  }

  private async sendWhileLeased(destination: string, owner: string): Promise<DrainOutcome> {
    const o = this.options;
    for (;;) {
      if (this.stopping) return 'stopped';
      if (!(await this.store.renewLease(destination, owner, Date.now() + o.leaseMs))) return 'lost';
      let txn = await this.store.inflight(destination);
      if (!txn) {
        const pdus = await this.store.pendingPdus(destination, o.maxPdusPerTxn);
        const edus = await this.store.pendingEdus(destination, o.maxEdusPerTxn);
        if (!pdus.length && !edus.length) return 'empty';
        const body: TransactionBody = {
          origin: this.serverName,
          origin_server_ts: Date.now(),
          pdus: pdus.filter((p) => p.json !== null).map((p) => {
            const j = JSON.parse(p.json!) as Record<string, unknown>;
            delete j.unsigned;
            return j;
          }),
          edus: edus.map((e) => ({ edu_type: e.edu_type, content: JSON.parse(e.content) })),
        };
        txn = { txnId: newTxnId(), body: JSON.stringify(body), pduIds: pdus.map((p) => p.id), eduIds: edus.map((e) => e.id) };
        if (!body.pdus.length && !body.edus.length) {
          // Only rows whose events are gone: nothing to send.
          await this.db.transaction((trx) => this.store.finishTxn(destination, txn!, null, trx));
          continue;
        }
        if (!(await this.store.saveInflight(destination, owner, txn))) return 'lost';
      }
      const body = JSON.parse(txn.body) as TransactionBody;
      let response: TransactionResponse;
      try {
        response = await this.transport.sendTransaction(destination, txn.txnId, body);
      } catch (err) {
        const f = classifyFailure(err);
        if (f.retry) {
          await this.backOff(destination, owner, txn, f);
          return 'backoff';
        }
        this.log.warn({ destination, txnId: txn.txnId, status: f.status, err: f.message, pdus: body.pdus.length, edus: body.edus.length },
          'transaction rejected by the destination; dropping it');
        await this.db.transaction((trx) => this.store.finishTxn(destination, txn!, null, trx));
        continue;
      }
      for (const [eventId, r] of Object.entries(response.pdus ?? {})) {
        if (r && typeof r.error === 'string') this.log.info({ destination, eventId, error: r.error }, 'destination rejected a PDU');
      }
      await this.db.transaction((trx) => this.store.finishTxn(destination, txn!, { now: Date.now() }, trx));
      this.log.debug({ destination, txnId: txn.txnId, pdus: body.pdus.length, edus: body.edus.length }, 'transaction delivered');
    }
  }

  private async backOff(destination: string, owner: string, txn: InflightTxn, f: ReturnType<typeof classifyFailure>): Promise<void> {
    const o = this.options;
    const row = await this.store.destination(destination);
    const retryCount = (row?.retry_count ?? 0) + 1;
    let delay = Math.min(o.maxBackoffMs, o.minBackoffMs * 2 ** Math.min(30, retryCount - 1));
    delay = Math.round(delay * (1 + o.backoffJitter * Math.random()));
    if (f.retryAfterMs !== undefined) delay = Math.max(delay, Math.min(f.retryAfterMs, o.maxBackoffMs));
    const now = Date.now();
    if (row?.lease_owner !== owner) return; // lost the lease meanwhile: its new holder decides
    await this.store.recordFailure(destination, { retryCount, nextAttemptTs: now + delay, error: f.status === null ? f.message : `HTTP ${f.status}: ${f.message}`, now });
    this.log.info({ destination, txnId: txn.txnId, status: f.status, err: f.message, retryCount, retryInMs: delay }, 'transaction failed; will retry');
    await this.wake(destination, delay);
  }
}

function serverOf(userId: string): string | null {
  const i = userId.indexOf(':');
  return i < 0 ? null : userId.slice(i + 1);
}

function newTxnId(): string {
  return `${Date.now()}-${randomBytes(6).toString('base64url')}`;
}
