// matrix-js-sdk helpers for tests: logged-in clients that sync, and waiting for what they see.
import { createClient, ClientEvent, RoomEvent, type MatrixClient, type MatrixEvent, type Room } from 'matrix-js-sdk';
import { registerUser, uniqueName } from './harness.js';

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

/** Resolves when `predicate` holds, re-checking on every client event; rejects after `ms`. */
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
    const events = [ClientEvent.Sync, ClientEvent.Event, ClientEvent.Room, RoomEvent.Timeline, RoomEvent.Receipt, RoomEvent.MyMembership, ClientEvent.AccountData, RoomEvent.AccountData, RoomEvent.Tags, ClientEvent.ToDeviceEvent] as const;
    // The SDK's typed emitter wants one listener signature per event; this one ignores arguments.
    const emitter = client as unknown as { on(e: string, f: () => void): void; off(e: string, f: () => void): void };
    const cleanup = () => {
      clearTimeout(timer);
      for (const e of events) emitter.off(e, check);
    };
    for (const e of events) emitter.on(e, check);
    check();
  });
}

export function timelineBodies(room: Room | null): string[] {
  return (room?.getLiveTimeline().getEvents() ?? []).filter((e: MatrixEvent) => e.getType() === 'm.room.message').map((e) => e.getContent().body as string);
}
