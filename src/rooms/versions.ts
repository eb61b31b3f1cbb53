// Room versions as data (spec "Room Versions", rooms/_index.md feature matrix and rooms/v1..v12).
// Every version-dependent behaviour elsewhere reads a flag from here; nothing else compares ids.

/** Which redaction algorithm applies (rooms/v1, v6, v8, v9, v11 "Redactions"). */
export type RedactionAlgorithm = 'v1' | 'v6' | 'v8' | 'v9' | 'v11';

export interface RoomVersion {
  id: string;
  /** Stable (as opposed to unstable) in the spec's room version list. */
  stable: boolean;
  /** v1: `event_id` is sent (v1/v2); v3: `$` + unpadded base64 reference hash; v4: URL-safe. */
  eventIdFormat: 'v1' | 'v3' | 'v4';
  /** v1 (room v1), v2 (rooms v2–v11), v2.1 (room v12, MSC4297). */
  stateRes: 'v1' | 'v2' | 'v2.1';
  redaction: RedactionAlgorithm;
  /** v6+: canonical JSON integer range enforced (rooms/v6 "Canonical JSON"). */
  strictCanonicalJson: boolean;
  /** v5+: signing keys must be valid at origin_server_ts (rooms/v5 "Signing key validity period"). */
  enforceKeyValidity: boolean;
  /** v1–v5: auth rule for `m.room.aliases` (removed in rooms/v6). */
  specialCaseAliasesAuth: boolean;
  /** v1–v2: `m.room.redaction` is an auth rule (rule 11); v3+ "Handling redactions" applies instead. */
  redactionAuthRule: boolean;
  /** v1–v2: events must also be signed by the domain of their `event_id` (rooms/v3 auth rules note). */
  signedByEventIdDomain: boolean;
  /** v6+: `notifications` is checked like `events` in power level changes (rooms/v6 auth rules). */
  notificationsPowerLevels: boolean;
  /** v7+: `knock` membership and join rule. */
  knock: boolean;
  /** v8+: `restricted` join rule and `join_authorised_via_users_server`. */
  restrictedJoin: boolean;
  /** v10+: `knock_restricted` join rule. */
  knockRestricted: boolean;
  /** v10+: power level values must be integers (no strings). */
  intPowerLevels: boolean;
  /** v1–v5: float power levels are accepted and truncated (rooms/v1 "floaty power levels"). */
  floatPowerLevels: boolean;
  /** v11+: no `creator` in create content; the create event's `sender` is the creator. */
  implicitRoomCreator: boolean;
  /** v11+: `m.room.redaction` carries `redacts` in `content`. */
  redactsInContent: boolean;
  /** v12: the create event has no `room_id`; the room id is `!` + its reference hash (URL-safe). */
  roomIdFromCreateEvent: boolean;
  /** v12: `m.room.create` is not selected into `auth_events` (implied by the room id). */
  createEventInAuthEvents: boolean;
  /** v12: `additional_creators` in create content; creators have infinite power level. */
  additionalCreators: boolean;
  /** v12: creators have infinite power level and may not be listed in `users` of power levels. */
  privilegedCreators: boolean;
}

type Flags = Omit<RoomVersion, 'id'>;

const V1: Flags = {
  stable: true,
  eventIdFormat: 'v1',
  stateRes: 'v1',
  redaction: 'v1',
  strictCanonicalJson: false,
  enforceKeyValidity: false,
  specialCaseAliasesAuth: true,
  redactionAuthRule: true,
  signedByEventIdDomain: true,
  notificationsPowerLevels: false,
  knock: false,
  restrictedJoin: false,
  knockRestricted: false,
  intPowerLevels: false,
  floatPowerLevels: true,
  implicitRoomCreator: false,
  redactsInContent: false,
  roomIdFromCreateEvent: false,
  createEventInAuthEvents: true,
  additionalCreators: false,
  privilegedCreators: false,
};
// rooms/v2: state resolution v2.
const V2: Flags = { ...V1, stateRes: 'v2' };
// rooms/v3: event ids are reference hashes; redactions leave the auth rules.
const V3: Flags = { ...V2, eventIdFormat: 'v3', redactionAuthRule: false, signedByEventIdDomain: false };
// rooms/v4: URL-safe event ids.
const V4: Flags = { ...V3, eventIdFormat: 'v4' };
// rooms/v5: signing key validity.
const V5: Flags = { ...V4, enforceKeyValidity: true };
// rooms/v6: strict canonical JSON, no aliases auth rule, `notifications` checks, v6 redaction.
const V6: Flags = {
  ...V5,
  strictCanonicalJson: true,
  floatPowerLevels: false,
  specialCaseAliasesAuth: false,
  notificationsPowerLevels: true,
  redaction: 'v6',
};
// rooms/v7: knocking.
const V7: Flags = { ...V6, knock: true };
// rooms/v8: restricted join rule; join_rules keeps `allow` on redaction.
const V8: Flags = { ...V7, restrictedJoin: true, redaction: 'v8' };
// rooms/v9: member keeps `join_authorised_via_users_server` on redaction.
const V9: Flags = { ...V8, redaction: 'v9' };
// rooms/v10: knock_restricted, integer-only power levels.
const V10: Flags = { ...V9, knockRestricted: true, intPowerLevels: true };
// rooms/v11: implicit creator, `redacts` in content, v11 redaction.
const V11: Flags = { ...V10, implicitRoomCreator: true, redactsInContent: true, redaction: 'v11' };
// rooms/v12: room id from create event, creators (MSC4289/MSC4291), state res v2.1 (MSC4297).
const V12: Flags = {
  ...V11,
  stateRes: 'v2.1',
  roomIdFromCreateEvent: true,
  createEventInAuthEvents: false,
  additionalCreators: true,
  privilegedCreators: true,
};

const table: Record<string, Flags> = {
  '1': V1, '2': V2, '3': V3, '4': V4, '5': V5, '6': V6,
  '7': V7, '8': V8, '9': V9, '10': V10, '11': V11, '12': V12,
};

export const ROOM_VERSIONS: Readonly<Record<string, Readonly<RoomVersion>>> = Object.freeze(
  Object.fromEntries(Object.entries(table).map(([id, flags]) => [id, Object.freeze({ id, ...flags })])),
);

export const DEFAULT_ROOM_VERSION = '12';

/** The room version with this id, or undefined when it is not known to this server. */
export function getRoomVersion(id: string): Readonly<RoomVersion> | undefined {
  return Object.prototype.hasOwnProperty.call(ROOM_VERSIONS, id) ? ROOM_VERSIONS[id] : undefined;
}

/** Like {@link getRoomVersion} but throws for unknown versions. */
export function requireRoomVersion(id: string): Readonly<RoomVersion> {
  const v = getRoomVersion(id);
  if (!v) throw new Error(`unknown room version ${JSON.stringify(id)}`);
  return v;
}

/** For the `m.room_versions` capability (client-server API "Capabilities"). */
export function roomVersionCapability(): { default: string; available: Record<string, 'stable' | 'unstable'> } {
  const available: Record<string, 'stable' | 'unstable'> = {};
  for (const v of Object.values(ROOM_VERSIONS)) available[v.id] = v.stable ? 'stable' : 'unstable';
  return { default: DEFAULT_ROOM_VERSION, available };
}
