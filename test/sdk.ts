// matrix-js-sdk helpers for tests: logged-in clients that sync, and waiting for what they see; clients
// with the real Rust crypto (matrix-sdk-crypto-wasm) and the helpers end-to-end encryption tests share.
import { createClient, ClientEvent, RoomEvent, MatrixEventEvent, type MatrixClient, type MatrixEvent, type Room } from 'matrix-js-sdk';
import type { AuthDict, UIAuthCallback } from 'matrix-js-sdk';
import { LoggerLevel, Tracing } from '@matrix-org/matrix-sdk-crypto-wasm';
import { CryptoEvent } from 'matrix-js-sdk/lib/crypto-api/index.js';
import { api, registerUser, uniqueName } from './harness.js';

export type Login = Awaited<ReturnType<typeof registerUser>>;

export async function sdkUser(baseUrl: string, name = uniqueName()): Promise<MatrixClient> {
  const u = await registerUser(baseUrl, name);
  return createClient({ baseUrl, accessToken: u.access_token, userId: u.user_id, deviceId: u.device_id });
}

/** Starts the client and resolves once its first sync is done. */
export async function startSyncing(client: MatrixClient, opts: Parameters<MatrixClient['startClient']>[0] = {}): Promise<void> {
  const ready = new Promise<void>((resolve, reject) => {
    const onSync = (state: string) => {
      if (state === 'PREPARED' || state === 'SYNCING') {
        client.off(ClientEvent.Sync, onSync);
        resolve();
      } else if (state === 'ERROR') {
        client.off(ClientEvent.Sync, onSync);
        reject(new Error('sync error'));
      }
    };
    client.on(ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 20, ...opts });
  await ready;
}

/**
 * Resolves when `predicate` holds, re-checking on every client event (and every 250 ms, for changes
 * that emit nothing the helper listens to); rejects after `ms`.
 */
export function waitFor<T>(client: MatrixClient, predicate: () => T | undefined | false | null, ms = 10_000, what = 'condition'): Promise<T> {
  return new Promise((resolve, reject) => {
    const check = () => {
      try {
        const v = predicate();
        if (v) {
          cleanup();
          resolve(v);
        }
      } catch (err) {
        cleanup();
        reject(err);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const poll = setInterval(check, 250);
    const events = [ClientEvent.Sync, ClientEvent.Event, ClientEvent.Room, RoomEvent.Timeline, RoomEvent.Receipt, RoomEvent.MyMembership, ClientEvent.AccountData, RoomEvent.AccountData, RoomEvent.Tags, ClientEvent.ToDeviceEvent, MatrixEventEvent.Decrypted, CryptoEvent.DevicesUpdated] as const;
    // The SDK's typed emitter wants one listener signature per event; this one ignores arguments.
    const emitter = client as unknown as { on(e: string, f: () => void): void; off(e: string, f: () => void): void };
    const cleanup = () => {
      clearTimeout(timer);
      clearInterval(poll);
      for (const e of events) emitter.off(e, check);
    };
    for (const e of events) emitter.on(e, check);
    check();
  });
}

/** Resolves with the first truthy value of an async `probe`, polled every `intervalMs`; rejects after `ms`. */
export async function eventually<T>(probe: () => Promise<T | undefined | false | null> | T | undefined | false | null, ms = 30_000, what = 'condition', intervalMs = 250): Promise<T> {
  const deadline = Date.now() + ms;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message ?? lastError}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export function timelineBodies(room: Room | null): string[] {
  return (room?.getLiveTimeline().getEvents() ?? []).filter((e: MatrixEvent) => e.getType() === 'm.room.message').map((e) => e.getContent().body as string);
}

// ---------------------------------------------------------------------------------------------------
// End-to-end encryption: clients with the Rust crypto. Test files using these import
// 'fake-indexeddb/auto' first (the SDK expects IndexedDB to exist even with an in-memory store).

/**
 * matrix-js-sdk arms a 60 s abort timer for each crypto request and never clears it; such timers
 * must not keep the test process alive once the tests are done. Idempotent.
 */
export function unrefLongTimers(): void {
  const g = globalThis as unknown as { __latticeUnrefTimers?: boolean };
  if (g.__latticeUnrefTimers) return;
  g.__latticeUnrefTimers = true;
  const realSetTimeout = globalThis.setTimeout;
  globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const t = realSetTimeout(fn, ms, ...args);
    if ((ms ?? 0) >= 60_000) t.unref();
    return t;
  }) as typeof setTimeout;
}

// initRustCrypto turns the Rust tracing on at debug level; tests want its warnings only.
const tracingTurnOn = Tracing.prototype.turnOn;
Tracing.prototype.turnOn = function turnOn(this: Tracing) {
  tracingTurnOn.call(this);
  this.minLevel = LoggerLevel.Warn;
};

/**
 * A client for a login with the Rust crypto on an in-memory store (a fresh device's store). Secret
 * storage keys come from `secretStorageKeys` (which also caches new ones), or `recoveryKey` answers any
 * request (a user typing in their recovery key).
 */
export async function cryptoClient(baseUrl: string, u: Login, opts: { secretStorageKeys?: Map<string, Uint8Array>; recoveryKey?: Uint8Array } = {}): Promise<MatrixClient> {
  const keys = opts.secretStorageKeys ?? new Map<string, Uint8Array>();
  const recoveryKey = opts.recoveryKey;
  const client = createClient({
    baseUrl, accessToken: u.access_token, userId: u.user_id, deviceId: u.device_id,
    cryptoCallbacks: {
      getSecretStorageKey: async ({ keys: wanted }) => {
        for (const id of Object.keys(wanted)) if (keys.has(id)) return [id, keys.get(id)!];
        const first = Object.keys(wanted)[0];
        return recoveryKey && first ? [first, recoveryKey] : null;
      },
      cacheSecretStorageKey: (id, _info, key) => { keys.set(id, key); },
    },
  });
  await client.initRustCrypto({ useIndexedDB: false });
  return client;
}

/** A new device of an existing user: a password login. */
export async function loginDevice(baseUrl: string, u: Login): Promise<Login> {
  const r = await api(baseUrl, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.user_id }, password: u.password } });
  if (r.status !== 200) throw new Error(`login: ${r.status} ${JSON.stringify(r.body)}`);
  return { ...u, access_token: r.body.access_token, device_id: r.body.device_id };
}

/** The UIA callback an app gives bootstrapCrossSigning: try without auth, answer a challenge with the password. */
export function passwordUia(u: Login, seen: { challenges: number } = { challenges: 0 }): UIAuthCallback<void> {
  return async (makeRequest) => {
    try {
      await makeRequest(null);
    } catch (err) {
      const e = err as { httpStatus?: number; data?: { session?: string; flows?: unknown } };
      if (e.httpStatus !== 401 || !e.data?.flows) throw err;
      seen.challenges++;
      await makeRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: u.user_id }, password: u.password, session: e.data.session } as AuthDict);
    }
  };
}

/** Processes the Rust machine's outgoing requests (keys upload, queries) as a completed /sync would. */
export async function flushOutgoing(client: MatrixClient): Promise<void> {
  const crypto = client.getCrypto() as unknown as { outgoingRequestsManager: { doProcessOutgoingRequests(): Promise<void> } };
  await crypto.outgoingRequestsManager.doProcessOutgoingRequests();
}

/**
 * Waits until the client has the event `eventId` of `roomId` in its timeline and has decrypted it;
 * returns it. A failed decryption is retried now and then (the SDK also retries by itself when the
 * room key arrives).
 */
export async function waitForDecrypted(client: MatrixClient, roomId: string, eventId: string, ms = 30_000): Promise<MatrixEvent> {
  const deadline = Date.now() + ms;
  const ev = await waitFor(client, () => client.getRoom(roomId)?.findEventById(eventId), ms, `event ${eventId} at ${client.getDeviceId()}`);
  let lastRetry = Date.now();
  try {
    return await eventually(async () => {
      if (ev.isBeingDecrypted()) return null;
      if (!ev.isEncrypted() || (!ev.shouldAttemptDecryption() && !ev.isDecryptionFailure() && ev.getClearContent())) return ev;
      if (Date.now() - lastRetry > 3000) {
        lastRetry = Date.now();
        await client.decryptEventIfNeeded(ev, { isRetry: ev.isDecryptionFailure() });
      }
      return null;
    }, Math.max(1000, deadline - Date.now()), 'decryption');
  } catch (err) {
    throw new Error(`${(err as Error).message} of ${eventId} at ${client.getDeviceId()} (failure: ${ev.decryptionFailureReason ?? 'none'})`);
  }
}

/** Records the body of every /sync response the client gets from now on. */
export function recordSyncResponses(client: MatrixClient): Record<string, any>[] {
  const seen: Record<string, any>[] = [];
  const http = client.http as unknown as { authedRequest(method: string, path: string, ...rest: unknown[]): Promise<unknown> };
  const original = http.authedRequest.bind(http);
  http.authedRequest = async (method, path, ...rest) => {
    const res = await original(method, path, ...rest);
    if (path === '/sync') seen.push(res as Record<string, any>);
    return res;
  };
  return seen;
}
