// Room upgrades (spec: Client-Server API "Room Upgrades", server behaviour): a replacement room
// with a `predecessor`, the transferable state copied, local aliases and the directory listing
// moved, a tombstone in the old room and its power levels restricted.
import { randomBytes } from 'node:crypto';
import { MatrixError, forbidden } from '../http/errors.js';
import type { EventsStore } from '../storage/events-store.js';
import { creatorsOf, parsePowerLevelValue } from './auth-rules.js';
import { isPlainObject, isValidUserId, parseStateKey } from './event.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { EventPersister, NewEvent } from './persist.js';
import type { RoomData, RoomInfo } from './room-data.js';
import type { RoomDirectory } from './room-directory.js';
import type { RoomService } from './room-service.js';
import { getRoomVersion, type RoomVersion } from './versions.js';

/** State copied to the replacement room (the spec's recommended list), in sending order. */
const TRANSFERABLE = [
  'm.room.server_acl', 'm.room.encryption', 'm.room.name', 'm.room.avatar', 'm.room.topic',
  'm.room.guest_access', 'm.room.history_visibility', 'm.room.join_rules',
];
const PL_NAMED = ['users_default', 'events_default', 'state_default', 'ban', 'kick', 'redact', 'invite'];

/** Power level content made valid for `version`: integer values only (rooms v10+ need them). */
function normalisePowerLevels(content: Record<string, unknown>, from: RoomVersion, to: RoomVersion): Record<string, unknown> {
  const out: Record<string, unknown> = structuredClone(content);
  const fix = (v: unknown) => {
    const n = parsePowerLevelValue(v, from);
    return n === undefined ? undefined : (parsePowerLevelValue(n, to) ?? n);
  };
  for (const k of PL_NAMED) {
    if (!(k in out)) continue;
    const n = fix(out[k]);
    if (n === undefined) delete out[k];
    else out[k] = n;
  }
  for (const k of ['users', 'events', 'notifications']) {
    const m = out[k];
    if (m === undefined) continue;
    if (!isPlainObject(m)) {
      delete out[k];
      continue;
    }
    const fixed: Record<string, number> = {};
    for (const [key, v] of Object.entries(m)) {
      const n = fix(v);
      if (n !== undefined) fixed[key] = n;
    }
    out[k] = fixed;
  }
  return out;
}

function plNumber(content: Record<string, unknown>, key: string, def: number): number {
  const v = content[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : def;
}

export class RoomUpgrades {
  /** A repeated request (same room and user) while one runs gets the same answer. */
  private readonly inFlight = new Map<string, Promise<string>>();
  /** Upgrades of one room run one at a time. */
  private readonly mutex = new KeyedMutex();

  constructor(
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly rooms: RoomService,
    private readonly persister: EventPersister,
    private readonly directory: RoomDirectory,
    private readonly serverName: string,
  ) {}

  /** POST /rooms/{roomId}/upgrade; returns the replacement room's id. */
  async upgrade(userId: string, roomId: string, newVersionId: string, additionalCreators: readonly string[] = []): Promise<string> {
    const version = getRoomVersion(newVersionId);
    if (!version) throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${newVersionId} is not supported`);
    for (const u of additionalCreators) if (!isValidUserId(u)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid user id ${u}`);
    const key = `${roomId}\u0000${userId}`;
    const running = this.inFlight.get(key);
    if (running) return running;
    const p = this.mutex.run(roomId, () => this.run(userId, roomId, version, additionalCreators)).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  private async run(userId: string, roomId: string, version: RoomVersion, additionalCreators: readonly string[]): Promise<string> {
    const old = await this.rooms.requireRoom(roomId);
    await this.rooms.requireJoined(old, userId);
    const oldState = await this.data.currentState(old);
    const pl = await this.rooms.powerLevels(old, oldState);
    // 1. The user must be able to send the tombstone.
    if (pl.of(userId) < pl.required('m.room.tombstone', true)) throw forbidden('You cannot upgrade this room');
    const content = async (type: string, key = '') => (await this.data.stateEvent(oldState, type, key))?.pdu.content;
    const oldCreate = (await this.data.stateEvent(oldState, 'm.room.create', ''))?.pdu;

    // 2. The replacement room. `predecessor.event_id` is deprecated (spec v1.16) but still
    // populated: the last event of the old room before the upgrade.
    const createContent: Record<string, unknown> = { room_version: version.id };
    const last = (await this.store.forwardExtremities(old.nid)).sort((a, b) => b.depth - a.depth)[0];
    createContent.predecessor = { room_id: old.roomId, ...(last ? { event_id: last.event_id } : {}) };
    if (typeof oldCreate?.content?.type === 'string') createContent.type = oldCreate.content.type;
    if (oldCreate?.content?.['m.federate'] === false) createContent['m.federate'] = false;
    if (!version.implicitRoomCreator) createContent.creator = userId;
    const extraCreators = version.additionalCreators ? [...new Set(additionalCreators)].filter((u) => u !== userId) : [];
    if (extraCreators.length) createContent.additional_creators = extraCreators;
    const newRoomId = version.roomIdFromCreateEvent ? null : `!${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}:${this.serverName}`;
    const { room } = await this.persister.createRoomWithCreateEvent({ roomId: newRoomId, version, sender: userId, content: createContent });
    const send = (e: Omit<NewEvent, 'sender'>) => this.persister.send(room, { sender: userId, ...e });
    await send({ type: 'm.room.member', stateKey: userId, content: { membership: 'join', ...(await this.rooms.profileContent(userId)) } });

    // 3. Power levels, adapted to the new version's creator rules.
    const newCreators = new Set([userId, ...extraCreators]);
    const oldPl = await content('m.room.power_levels');
    const finalPl = normalisePowerLevels(oldPl ?? { users: Object.fromEntries([...creatorsOf(oldCreate, old.version)].map((c) => [c, 100])) }, old.version, version);
    const users = (finalPl.users ?? {}) as Record<string, number>;
    if (old.version.privilegedCreators && !version.privilegedCreators) {
      // Creators of the old room had unlimited power there; keep them on top in the new room.
      for (const c of creatorsOf(oldCreate, old.version)) users[c] = Math.max(users[c] ?? 0, 100);
    }
    if (version.privilegedCreators) for (const c of newCreators) delete users[c];
    finalPl.users = users;
    // Before v12 the upgrader needs enough power to send the copied state (as Synapse does, raise
    // it for the duration of the copy and restore the copied levels after).
    let initialPl = finalPl;
    if (!version.privilegedCreators) {
      const events = Object.values((finalPl.events ?? {}) as Record<string, number>);
      const needed = Math.max(plNumber(finalPl, 'state_default', 50), plNumber(finalPl, 'ban', 50), ...events);
      const current = users[userId] ?? plNumber(finalPl, 'users_default', 0);
      if (current < needed) initialPl = { ...finalPl, users: { ...users, [userId]: needed } };
    }
    await send({ type: 'm.room.power_levels', stateKey: '', content: initialPl });

    for (const type of TRANSFERABLE) {
      const c = await content(type);
      if (c) await send({ type, stateKey: '', content: c });
    }
    // Spaces keep their children.
    if (createContent.type === 'm.space') {
      for (const k of oldState.keys()) {
        const [type, sk] = parseStateKey(k);
        if (type !== 'm.space.child') continue;
        const c = await content(type, sk);
        if (c && Object.keys(c).length) await send({ type, stateKey: sk, content: c });
      }
    }
    // Bans carry over (as in Synapse): a banned user stays out of the replacement room.
    for (const m of await this.store.members(old.nid, ['ban'])) {
      const c = await content('m.room.member', m.user_id);
      await send({ type: 'm.room.member', stateKey: m.user_id, content: { membership: 'ban', ...(typeof c?.reason === 'string' ? { reason: c.reason } : {}) } });
    }
    if (initialPl !== finalPl) await send({ type: 'm.room.power_levels', stateKey: '', content: finalPl });

    // 4. Local aliases, the canonical alias and the directory listing move to the new room.
    const canonical = await content('m.room.canonical_alias');
    const localAliases = await this.store.aliasesOfRoom(old.roomId);
    if (canonical) {
      const moved = [canonical.alias, ...(Array.isArray(canonical.alt_aliases) ? canonical.alt_aliases : [])].filter((a): a is string => typeof a === 'string');
      await this.directory.removeFromCanonicalAlias(old, userId, moved);
    }
    if (localAliases.length) await this.store.moveAliases(old.roomId, room.roomId);
    if (canonical && (typeof canonical.alias === 'string' || Array.isArray(canonical.alt_aliases))) {
      try {
        await send({ type: 'm.room.canonical_alias', stateKey: '', content: canonical });
      } catch (err) {
        if (!(err instanceof MatrixError && err.status === 403)) throw err;
      }
    }
    if (await this.store.isRoomPublic(old.nid)) {
      await this.store.setRoomPublic(room.nid, true);
      await this.store.setRoomPublic(old.nid, false);
    }

    // 5. The tombstone.
    await this.persister.send(old, { sender: userId, type: 'm.room.tombstone', stateKey: '', content: { body: 'This room has been replaced', replacement_room: room.roomId } });

    // 6. Restrict the old room: events_default and invite at least max(50, users_default + 1).
    const current = (await this.data.stateEvent(await this.data.currentState(old), 'm.room.power_levels', ''))?.pdu.content;
    if (current) {
      const restricted = Math.max(50, plNumber(normalisePowerLevels(current, old.version, old.version), 'users_default', 0) + 1);
      const next = { ...current };
      let changed = false;
      for (const k of ['events_default', 'invite']) {
        const v = parsePowerLevelValue(current[k], old.version) ?? 0;
        if (v < restricted) {
          next[k] = restricted;
          changed = true;
        }
      }
      if (changed) {
        try {
          await this.persister.send(old, { sender: userId, type: 'm.room.power_levels', stateKey: '', content: next });
        } catch (err) {
          if (!(err instanceof MatrixError && err.status === 403)) throw err;
        }
      }
    }
    return room.roomId;
  }

}
