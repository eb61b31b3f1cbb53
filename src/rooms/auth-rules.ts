// Authorization rules for every room version.
//
// Spec: rooms/v1 (fragment v1-auth-rules), rooms/v3 (v3-auth-rules), rooms/v6, rooms/v7,
// rooms/v8 (v8-auth-rules), rooms/v10, rooms/v11, rooms/v12 "Authorization rules";
// server-server API "Auth events selection", "Definitions" (required power level, invite/kick/
// ban/redact level, target user); rooms/v3 "Handling redactions". Rule numbers in comments refer to
// the v12 numbering unless stated otherwise.
import { verifyJsonSignature } from '../crypto/signing.js';
import {
  domainOf,
  isPlainObject,
  isValidUserId,
  membershipOf,
  prevEventIds,
  stateKey,
  type PDU,
  type StateMap,
} from './event.js';
import { eventIdOf, redactsOf } from './hashing.js';
import { getRoomVersion, type RoomVersion } from './versions.js';

export class AuthError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'AuthError';
  }
}

/** Looks up the state event for `(type, state_key)` in the state the event is checked against. */
export type AuthStateLookup = (type: string, stateKey: string) => PDU | undefined;

export interface CheckAuthOptions {
  /**
   * The event's `auth_events` as events. When given, the rules "considering the event's
   * auth_events" are applied too (no duplicates, only selected types, same room, create present
   * before v12). The caller must already have excluded rejected auth events (rule 3.3).
   */
  authEvents?: readonly PDU[];
  /** Event id of an event (defaults to the reference-hash id, memoised per object). */
  eventIdOf?: (event: PDU) => string;
  /**
   * Whether the event is validly signed by `serverName` (rule 5.2, `join_authorised_via_users_server`).
   * Defaults to "carries a signature from that server": the cryptographic check belongs to the
   * signature checks on receipt (see `requiredSignatureServers` in hashing.ts).
   */
  isSignedBy?: (event: PDU, serverName: string) => boolean;
}

const CREATE = 'm.room.create';
const MEMBER = 'm.room.member';
const POWER_LEVELS = 'm.room.power_levels';
const JOIN_RULES = 'm.room.join_rules';
const THIRD_PARTY_INVITE = 'm.room.third_party_invite';

function hasOwn(obj: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

function reject(reason: string): never {
  throw new AuthError(reason);
}

// ---------------------------------------------------------------------------------------------
// Power levels

/**
 * Parses one power level value as the room version allows: integers always; strings holding an
 * integer before v10 (rooms/v1 "stringy power levels"); floats, truncated, in v1–v5 (rooms/v1
 * "floaty power levels"). Undefined when the value is not acceptable.
 */
export function parsePowerLevelValue(value: unknown, version: RoomVersion): number | undefined {
  if (typeof value === 'number') {
    if (Number.isInteger(value)) return value;
    if (version.floatPowerLevels && Number.isFinite(value)) return Math.trunc(value);
    return undefined;
  }
  if (typeof value === 'string' && !version.intPowerLevels) {
    if (!/^\s*[+-]?\d+\s*$/.test(value)) return undefined;
    const n = Number(value.trim());
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

function namedLevel(content: Record<string, unknown> | undefined, key: string, fallback: number, version: RoomVersion): number {
  if (!content || !hasOwn(content, key)) return fallback;
  return parsePowerLevelValue(content[key], version) ?? fallback;
}

/**
 * The room creators: the create event's `sender` plus `additional_creators` (v12), the `sender`
 * (v11), or `content.creator` (v1–v10).
 */
export function creatorsOf(createEvent: PDU | undefined, version: RoomVersion): Set<string> {
  const out = new Set<string>();
  if (!createEvent) return out;
  if (version.implicitRoomCreator) {
    out.add(createEvent.sender);
    const extra = createEvent.content?.additional_creators;
    if (version.additionalCreators && Array.isArray(extra)) {
      for (const u of extra) if (typeof u === 'string') out.add(u);
    }
  } else if (typeof createEvent.content?.creator === 'string') {
    out.add(createEvent.content.creator);
  }
  return out;
}

/**
 * A user's power level in the given state: infinite for v12 creators; else `users[user]`, else
 * `users_default` (0); with no power levels event, 100 for the creator and 0 for everyone else
 * (m.room.power_levels description).
 */
export function powerLevelOf(userId: string, state: AuthStateLookup, version: RoomVersion): number {
  const create = state(CREATE, '');
  if (version.privilegedCreators && creatorsOf(create, version).has(userId)) return Infinity;
  const pl = state(POWER_LEVELS, '');
  if (pl) {
    const content = isPlainObject(pl.content) ? pl.content : {};
    const users = content.users;
    if (isPlainObject(users) && hasOwn(users, userId)) {
      const v = parsePowerLevelValue(users[userId], version);
      if (v !== undefined) return v;
    }
    return namedLevel(content, 'users_default', 0, version);
  }
  return creatorsOf(create, version).has(userId) ? 100 : 0;
}

/**
 * The *required power level* for sending an event of this type (server-server API "Definitions"):
 * `events[type]`, else `state_default` (50) for state events or `events_default` (0).
 */
export function requiredPowerLevelFor(eventType: string, isState: boolean, state: AuthStateLookup, version: RoomVersion): number {
  const pl = state(POWER_LEVELS, '');
  const content = pl && isPlainObject(pl.content) ? pl.content : undefined;
  const events = content?.events;
  if (isPlainObject(events) && hasOwn(events, eventType)) {
    const v = parsePowerLevelValue(events[eventType], version);
    if (v !== undefined) return v;
  }
  return isState ? namedLevel(content, 'state_default', 50, version) : namedLevel(content, 'events_default', 0, version);
}

/** The invite (default 0), kick, ban and redact (default 50) levels. */
export function namedPowerLevel(name: 'invite' | 'kick' | 'ban' | 'redact', state: AuthStateLookup, version: RoomVersion): number {
  const pl = state(POWER_LEVELS, '');
  const content = pl && isPlainObject(pl.content) ? pl.content : undefined;
  return namedLevel(content, name, name === 'invite' ? 0 : 50, version);
}

// ---------------------------------------------------------------------------------------------
// Auth events selection

/**
 * The `(type, state_key)` pairs an event's `auth_events` should reference (server-server API
 * "Auth events selection"; v12 drops `m.room.create`).
 */
export function authEventTypesFor(event: PDU, version: RoomVersion): Array<[type: string, stateKey: string]> {
  if (event.type === CREATE && (event.state_key === '' || event.state_key === undefined)) return [];
  const out: Array<[string, string]> = [];
  const seen = new Set<string>();
  const add = (type: string, key: string) => {
    const k = stateKey(type, key);
    if (!seen.has(k)) {
      seen.add(k);
      out.push([type, key]);
    }
  };
  if (version.createEventInAuthEvents) add(CREATE, '');
  add(POWER_LEVELS, '');
  add(MEMBER, event.sender);
  if (event.type === MEMBER && typeof event.state_key === 'string') {
    add(MEMBER, event.state_key);
    const membership = event.content?.membership;
    if (membership === 'join' || membership === 'invite' || membership === 'knock') add(JOIN_RULES, '');
    if (membership === 'invite') {
      const tpi = event.content?.third_party_invite;
      const token = isPlainObject(tpi) && isPlainObject(tpi.signed) ? tpi.signed.token : undefined;
      if (typeof token === 'string') add(THIRD_PARTY_INVITE, token);
    }
    const via = event.content?.join_authorised_via_users_server;
    if (membership === 'join' && version.restrictedJoin && typeof via === 'string') add(MEMBER, via);
  }
  return out;
}

/**
 * An {@link AuthStateLookup} over a list of events (e.g. an event's auth events). In v12 the
 * create event is not among the auth events: pass it (found from the room id) as `createEvent`.
 */
export function authStateFromEvents(events: Iterable<PDU>, createEvent?: PDU): AuthStateLookup {
  const map = new Map<string, PDU>();
  if (createEvent) map.set(stateKey(CREATE, ''), createEvent);
  for (const e of events) if (typeof e.state_key === 'string') map.set(stateKey(e.type, e.state_key), e);
  return (type, key) => map.get(stateKey(type, key));
}

/** An {@link AuthStateLookup} over a state map and an event source. */
export function authStateFromMap(state: StateMap, getEvent: (id: string) => PDU | undefined): AuthStateLookup {
  return (type, key) => {
    const id = state.get(stateKey(type, key));
    return id === undefined ? undefined : getEvent(id);
  };
}

// ---------------------------------------------------------------------------------------------
// The rules

function defaultIsSignedBy(event: PDU, serverName: string): boolean {
  const s = event.signatures?.[serverName];
  return isPlainObject(s) && Object.keys(s).length > 0;
}

/**
 * Checks `event` against the authorization rules of `version`, with `authState` giving the
 * relevant state (the event's auth events, the state before the event, or the current state).
 * Throws {@link AuthError} when the event is not allowed; returns normally when it is.
 *
 * "Events must be signed by the server denoted by the sender property" is left to the signature
 * checks on receipt (hashing.ts `verifyEventSignature` / `requiredSignatureServers`).
 */
export function checkAuth(event: PDU, authState: AuthStateLookup, version: RoomVersion, opts: CheckAuthOptions = {}): void {
  const idOf = opts.eventIdOf ?? ((e: PDU) => eventIdOf(e, version));
  const content = isPlainObject(event.content) ? event.content : {};

  // Rule 1: m.room.create.
  if (event.type === CREATE) {
    checkCreate(event, content, version);
    return;
  }

  const create = authState(CREATE, '');
  if (!create) reject('no m.room.create event in the auth state');

  // v12 rule 2: the room id is the create event's id with the `!` sigil.
  if (version.roomIdFromCreateEvent) {
    if (typeof event.room_id !== 'string' || !event.room_id.startsWith('!') || idOf(create) !== '$' + event.room_id.slice(1)) {
      reject('room_id does not match the m.room.create event');
    }
  }

  // Rule 3 (v1–v11 rule 2): considering the event's auth_events.
  if (opts.authEvents) checkAuthEventsShape(event, opts.authEvents, version);

  // Rule 4 (v1–v11 rule 3): m.federate.
  if (create.content?.['m.federate'] === false && domainOf(event.sender) !== domainOf(create.sender)) {
    reject('room is not federated with the sender\'s server');
  }

  // v1–v5 rule 4: m.room.aliases.
  if (version.specialCaseAliasesAuth && event.type === 'm.room.aliases') {
    if (typeof event.state_key !== 'string') reject('m.room.aliases without state_key');
    if (domainOf(event.sender) !== event.state_key) reject('m.room.aliases state_key is not the sender\'s server');
    return;
  }

  // Rule 5: m.room.member.
  if (event.type === MEMBER) {
    checkMember(event, content, create, authState, version, idOf, opts.isSignedBy ?? defaultIsSignedBy);
    return;
  }

  // Rule 6: the sender must be joined.
  if (membershipOf(authState(MEMBER, event.sender)) !== 'join') reject('sender is not joined to the room');

  const senderLevel = powerLevelOf(event.sender, authState, version);

  // Rule 7: m.room.third_party_invite.
  if (event.type === THIRD_PARTY_INVITE) {
    if (senderLevel >= namedPowerLevel('invite', authState, version)) return;
    reject('sender may not invite');
  }

  // Rule 8: required power level.
  const isState = typeof event.state_key === 'string';
  if (requiredPowerLevelFor(event.type, isState, authState, version) > senderLevel) {
    reject(`sender's power level is too low to send ${event.type}`);
  }

  // Rule 9: user-owned state keys.
  if (typeof event.state_key === 'string' && event.state_key.startsWith('@') && event.state_key !== event.sender) {
    reject('state_key starting with @ must be the sender');
  }

  // Rule 10: m.room.power_levels.
  if (event.type === POWER_LEVELS) {
    checkPowerLevels(event, content, create, senderLevel, authState, version);
    return;
  }

  // v1–v2 rule 11: m.room.redaction.
  if (version.redactionAuthRule && event.type === 'm.room.redaction') {
    if (senderLevel >= namedPowerLevel('redact', authState, version)) return;
    const redacts = redactsOf(event, version);
    const ownId = event.event_id;
    if (redacts !== undefined && typeof ownId === 'string' && domainOf(redacts) !== undefined && domainOf(redacts) === domainOf(ownId)) {
      return;
    }
    reject('sender may not redact this event');
  }

  // Otherwise, allow.
}

function checkCreate(event: PDU, content: Record<string, unknown>, version: RoomVersion): void {
  if (Array.isArray(event.prev_events) && event.prev_events.length > 0) reject('m.room.create has prev_events');
  if (version.roomIdFromCreateEvent) {
    if (hasOwn(event, 'room_id') && event.room_id !== undefined) reject('m.room.create must not have a room_id');
  } else {
    const roomDomain = typeof event.room_id === 'string' ? domainOf(event.room_id) : undefined;
    if (roomDomain === undefined || roomDomain !== domainOf(event.sender)) reject('room_id domain does not match sender');
  }
  if (hasOwn(content, 'room_version')) {
    const rv = content.room_version;
    if (typeof rv !== 'string' || !getRoomVersion(rv)) reject('unrecognised room_version');
  }
  if (version.additionalCreators && hasOwn(content, 'additional_creators')) {
    const extra = content.additional_creators;
    if (!Array.isArray(extra) || !extra.every(isValidUserId)) reject('additional_creators must be an array of user ids');
  }
  if (!version.implicitRoomCreator && !hasOwn(content, 'creator')) reject('m.room.create has no creator');
}

function checkAuthEventsShape(event: PDU, authEvents: readonly PDU[], version: RoomVersion): void {
  const expected = new Set(authEventTypesFor(event, version).map(([t, k]) => stateKey(t, k)));
  const seen = new Set<string>();
  let hasCreate = false;
  for (const ae of authEvents) {
    if (typeof ae.state_key !== 'string') reject('auth event is not a state event');
    const k = stateKey(ae.type, ae.state_key);
    if (seen.has(k)) reject(`duplicate auth event for ${ae.type}/${ae.state_key}`);
    seen.add(k);
    if (!expected.has(k)) reject(`unexpected auth event ${ae.type}/${ae.state_key}`);
    // v12 rule 3.5; applied to every version as a room-confusion guard.
    if (ae.type !== CREATE || version.createEventInAuthEvents) {
      if (ae.room_id !== event.room_id) reject('auth event from a different room');
    }
    if (ae.type === CREATE) hasCreate = true;
  }
  if (version.createEventInAuthEvents && !hasCreate) reject('no m.room.create among auth_events');
}

function checkMember(
  event: PDU,
  content: Record<string, unknown>,
  create: PDU,
  state: AuthStateLookup,
  version: RoomVersion,
  idOf: (e: PDU) => string,
  isSignedBy: (event: PDU, serverName: string) => boolean,
): void {
  // 5.1
  if (typeof event.state_key !== 'string' || !hasOwn(content, 'membership')) reject('member event without state_key or membership');
  const membership = content.membership;
  const target = event.state_key;
  const sender = event.sender;

  // 5.2 (v8+): the authorising server must have signed the event.
  if (version.restrictedJoin && hasOwn(content, 'join_authorised_via_users_server')) {
    const via = content.join_authorised_via_users_server;
    const server = typeof via === 'string' ? domainOf(via) : undefined;
    if (!server || !isSignedBy(event, server)) reject('not signed by the join_authorised_via_users_server server');
  }

  const senderMembership = membershipOf(state(MEMBER, sender));
  const targetMembership = membershipOf(state(MEMBER, target));
  const joinRulesEvent = state(JOIN_RULES, '');
  const joinRule = typeof joinRulesEvent?.content?.join_rule === 'string' ? joinRulesEvent.content.join_rule : undefined;

  switch (membership) {
    case 'join': {
      // 5.3.1: the creator's first join straight after the create event.
      const prevs = prevEventIds(event);
      const firstJoiner = version.implicitRoomCreator ? create.sender : create.content?.creator;
      if (prevs.length === 1 && target === firstJoiner && prevs[0] === idOf(create)) return;
      // 5.3.2–5.3.3
      if (sender !== target) reject('cannot join on behalf of another user');
      if (senderMembership === 'ban') reject('sender is banned');
      // 5.3.4
      if (joinRule === 'invite' || (version.knock && joinRule === 'knock')) {
        if (senderMembership === 'invite' || senderMembership === 'join') return;
        reject('room is invite-only and the sender is not invited');
      }
      // 5.3.5 (v8+, knock_restricted v10+)
      if ((version.restrictedJoin && joinRule === 'restricted') || (version.knockRestricted && joinRule === 'knock_restricted')) {
        if (senderMembership === 'join' || senderMembership === 'invite') return;
        const authoriser = content.join_authorised_via_users_server;
        if (typeof authoriser !== 'string') reject('restricted join without join_authorised_via_users_server');
        // "a user with sufficient permission to invite other users": inviting requires being
        // joined (rule 5.4.2) and having the invite level (rule 5.4.4).
        if (membershipOf(state(MEMBER, authoriser)) !== 'join') reject('authorising user is not joined');
        if (powerLevelOf(authoriser, state, version) < namedPowerLevel('invite', state, version)) {
          reject('authorising user may not invite');
        }
        return;
      }
      // 5.3.6–5.3.7
      if (joinRule === 'public') return;
      reject('room is not public');
    }
    case 'invite': {
      // 5.4.1: third party invites.
      if (hasOwn(content, 'third_party_invite')) {
        if (targetMembership === 'ban') reject('target is banned');
        const tpi = content.third_party_invite;
        const signed = isPlainObject(tpi) ? tpi.signed : undefined;
        if (!isPlainObject(signed)) reject('third_party_invite has no signed object');
        const { mxid, token } = signed;
        if (typeof mxid !== 'string' || typeof token !== 'string') reject('third_party_invite.signed lacks mxid or token');
        if (mxid !== target) reject('third_party_invite mxid does not match state_key');
        const tpiEvent = state(THIRD_PARTY_INVITE, token);
        if (!tpiEvent) reject('no matching m.room.third_party_invite');
        if (tpiEvent.sender !== sender) reject('sender did not send the m.room.third_party_invite');
        if (thirdPartySignedMatches(signed, tpiEvent)) return;
        reject('third_party_invite signature does not verify');
      }
      // 5.4.2–5.4.5
      if (senderMembership !== 'join') reject('sender is not joined');
      if (targetMembership === 'join' || targetMembership === 'ban') reject('target is joined or banned');
      if (powerLevelOf(sender, state, version) >= namedPowerLevel('invite', state, version)) return;
      reject('sender may not invite');
    }
    case 'leave': {
      // 5.5.1: leaving, rejecting an invite, rescinding a knock (v7+).
      if (sender === target) {
        if (senderMembership === 'join' || senderMembership === 'invite' || (version.knock && senderMembership === 'knock')) return;
        reject('sender cannot leave from their current membership');
      }
      // 5.5.2–5.5.5: kicks and unbans.
      if (senderMembership !== 'join') reject('sender is not joined');
      const senderLevel = powerLevelOf(sender, state, version);
      if (targetMembership === 'ban' && senderLevel < namedPowerLevel('ban', state, version)) reject('sender may not unban');
      if (senderLevel >= namedPowerLevel('kick', state, version) && powerLevelOf(target, state, version) < senderLevel) return;
      reject('sender may not kick the target');
    }
    case 'ban': {
      // 5.6
      if (senderMembership !== 'join') reject('sender is not joined');
      const senderLevel = powerLevelOf(sender, state, version);
      if (senderLevel >= namedPowerLevel('ban', state, version) && powerLevelOf(target, state, version) < senderLevel) return;
      reject('sender may not ban the target');
    }
    case 'knock': {
      // 5.7 (v7+)
      if (!version.knock) reject('unknown membership knock');
      if (!(joinRule === 'knock' || (version.knockRestricted && joinRule === 'knock_restricted'))) reject('room does not allow knocking');
      if (sender !== target) reject('cannot knock on behalf of another user');
      if (senderMembership !== 'ban' && senderMembership !== 'invite' && senderMembership !== 'join') return;
      reject('sender cannot knock from their current membership');
    }
    default:
      // 5.8
      reject(`unknown membership ${JSON.stringify(membership)}`);
  }
}

/** Rule 5.4.1.7: any signature in `signed` verifies with any public key of the 3pid invite. */
function thirdPartySignedMatches(signed: Record<string, unknown>, tpiEvent: PDU): boolean {
  const keys: string[] = [];
  const c = isPlainObject(tpiEvent.content) ? tpiEvent.content : {};
  if (typeof c.public_key === 'string') keys.push(c.public_key);
  if (Array.isArray(c.public_keys)) {
    for (const k of c.public_keys) if (isPlainObject(k) && typeof k.public_key === 'string') keys.push(k.public_key);
  }
  const signatures = signed.signatures;
  if (!isPlainObject(signatures)) return false;
  const signable = signed as Record<string, unknown> & { signatures?: Record<string, Record<string, string>> };
  for (const [entity, sigs] of Object.entries(signatures)) {
    if (!isPlainObject(sigs)) continue;
    for (const keyId of Object.keys(sigs)) {
      for (const pk of keys) {
        try {
          if (verifyJsonSignature(signable, entity, keyId, pk)) return true;
        } catch {
          // not canonical-JSON encodable, or a malformed key: no match
        }
      }
    }
  }
  return false;
}

const TOP_LEVEL_LEVELS = ['users_default', 'events_default', 'state_default', 'ban', 'redact', 'kick', 'invite'];

function checkPowerLevels(
  event: PDU,
  content: Record<string, unknown>,
  create: PDU,
  senderLevel: number,
  state: AuthStateLookup,
  version: RoomVersion,
): void {
  // 10.1–10.2 (v10+): integers only.
  if (version.intPowerLevels) {
    for (const k of TOP_LEVEL_LEVELS) {
      if (hasOwn(content, k) && !Number.isInteger(content[k])) reject(`power levels ${k} is not an integer`);
    }
    for (const k of ['events', 'notifications']) {
      if (!hasOwn(content, k)) continue;
      const v = content[k];
      if (!isPlainObject(v) || !Object.values(v).every((x) => Number.isInteger(x))) reject(`power levels ${k} must map to integers`);
    }
  }
  // 10.3: users is an object of user id → power level.
  if (hasOwn(content, 'users')) {
    const users = content.users;
    if (!isPlainObject(users)) reject('power levels users is not an object');
    for (const [user, level] of Object.entries(users)) {
      if (!isValidUserId(user)) reject(`power levels users has an invalid user id ${JSON.stringify(user)}`);
      if (parsePowerLevelValue(level, version) === undefined) reject(`power level of ${user} is not an integer`);
    }
    // 10.4 (v12): creators may not be listed.
    if (version.privilegedCreators) {
      for (const c of creatorsOf(create, version)) if (hasOwn(users, c)) reject('room creators may not appear in power levels users');
    }
  }

  // 10.5
  const previous = state(POWER_LEVELS, '');
  if (!previous) return;
  const oldContent = isPlainObject(previous.content) ? previous.content : {};

  const parse = (obj: Record<string, unknown>, key: string): number | undefined =>
    hasOwn(obj, key) ? parsePowerLevelValue(obj[key], version) : undefined;

  // 10.6: top-level levels.
  for (const k of TOP_LEVEL_LEVELS) {
    const oldV = parse(oldContent, k);
    const newV = parse(content, k);
    if (oldV === newV) continue;
    if (oldV !== undefined && oldV > senderLevel) reject(`cannot change ${k} from a level above your own`);
    if (newV !== undefined && newV > senderLevel) reject(`cannot set ${k} above your own level`);
  }

  // 10.7–10.8: events (and notifications from v6).
  const maps = version.notificationsPowerLevels ? ['events', 'notifications'] : ['events'];
  for (const m of maps) {
    const oldMap = isPlainObject(oldContent[m]) ? (oldContent[m] as Record<string, unknown>) : {};
    const newMap = isPlainObject(content[m]) ? (content[m] as Record<string, unknown>) : {};
    for (const k of new Set([...Object.keys(oldMap), ...Object.keys(newMap)])) {
      const oldV = parse(oldMap, k);
      const newV = parse(newMap, k);
      if (oldV === newV) continue;
      if (oldV !== undefined && oldV > senderLevel) reject(`cannot change ${m}.${k} from a level above your own`);
      if (newV !== undefined && newV > senderLevel) reject(`cannot set ${m}.${k} above your own level`);
    }
  }

  // 10.9–10.10: users.
  const oldUsers = isPlainObject(oldContent.users) ? oldContent.users : {};
  const newUsers = isPlainObject(content.users) ? content.users : {};
  for (const u of new Set([...Object.keys(oldUsers), ...Object.keys(newUsers)])) {
    const oldV = parse(oldUsers, u);
    const newV = parse(newUsers, u);
    if (oldV === newV) continue;
    if (oldV !== undefined && u !== event.sender && oldV >= senderLevel) reject(`cannot change the level of ${u}`);
    if (newV !== undefined && newV > senderLevel) reject(`cannot give ${u} a level above your own`);
  }
}

// ---------------------------------------------------------------------------------------------
// Redactions

/**
 * Whether a redaction that passed the auth rules should actually be applied to `original`
 * (rooms/v3 "Handling redactions": redact level, or same sender server). For v1/v2 this is auth
 * rule 11 (redact level, or the same `event_id` server).
 */
export function isRedactionApplicable(redaction: PDU, original: PDU, state: AuthStateLookup, version: RoomVersion): boolean {
  if (powerLevelOf(redaction.sender, state, version) >= namedPowerLevel('redact', state, version)) return true;
  if (version.redactionAuthRule) {
    const a = typeof redaction.event_id === 'string' ? domainOf(redaction.event_id) : undefined;
    const b = typeof original.event_id === 'string' ? domainOf(original.event_id) : undefined;
    return a !== undefined && a === b;
  }
  const a = domainOf(redaction.sender);
  return a !== undefined && a === domainOf(original.sender);
}
