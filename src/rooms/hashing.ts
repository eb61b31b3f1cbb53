// Content hashes, redaction, reference hashes / event ids and event signatures.
//
// Spec: server-server API "Signing Events" (content hash, reference hash, "Validating hashes and
// signatures on received events"), rooms/v1|v6|v8|v9|v11 "Redactions", rooms/v1 "Event IDs",
// rooms/v3 + v4 "Event IDs", rooms/v12 (room ids), appendices "Canonical JSON".
import { canonicalJson } from '../crypto/canonical-json.js';
import { encodeBase64, encodeBase64Url } from '../crypto/base64.js';
import { sha256 } from '../crypto/hashes.js';
import { signBytes, verifyBytes, verifyBytesAsync, type SigningKey } from '../crypto/signing.js';
import { domainOf, isPlainObject, type PDU } from './event.js';
import { getRoomVersion, type RedactionAlgorithm, type RoomVersion } from './versions.js';

type JsonObject = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Redaction

const TOP_LEVEL_V1 = [
  'event_id', 'type', 'room_id', 'sender', 'state_key', 'content', 'hashes', 'signatures', 'depth',
  'prev_events', 'prev_state', 'auth_events', 'origin', 'origin_server_ts', 'membership',
];
// rooms/v11 "Redactions": origin, membership and prev_state are no longer protected.
const TOP_LEVEL_V11 = [
  'event_id', 'type', 'room_id', 'sender', 'state_key', 'content', 'hashes', 'signatures', 'depth',
  'prev_events', 'auth_events', 'origin_server_ts',
];

const POWER_LEVEL_KEYS_V1 = ['ban', 'events', 'events_default', 'kick', 'redact', 'state_default', 'users', 'users_default'];

/** Content keys kept per event type; `'*'` keeps the whole content. */
const CONTENT_KEYS: Record<RedactionAlgorithm, Record<string, string[] | '*'>> = {
  v1: {
    'm.room.member': ['membership'],
    'm.room.create': ['creator'],
    'm.room.join_rules': ['join_rule'],
    'm.room.power_levels': POWER_LEVEL_KEYS_V1,
    'm.room.aliases': ['aliases'],
    'm.room.history_visibility': ['history_visibility'],
  },
  // rooms/v6: m.room.aliases loses its special meaning.
  v6: {
    'm.room.member': ['membership'],
    'm.room.create': ['creator'],
    'm.room.join_rules': ['join_rule'],
    'm.room.power_levels': POWER_LEVEL_KEYS_V1,
    'm.room.history_visibility': ['history_visibility'],
  },
  // rooms/v8: join rules keep `allow`.
  v8: {
    'm.room.member': ['membership'],
    'm.room.create': ['creator'],
    'm.room.join_rules': ['join_rule', 'allow'],
    'm.room.power_levels': POWER_LEVEL_KEYS_V1,
    'm.room.history_visibility': ['history_visibility'],
  },
  // rooms/v9: member keeps `join_authorised_via_users_server`.
  v9: {
    'm.room.member': ['membership', 'join_authorised_via_users_server'],
    'm.room.create': ['creator'],
    'm.room.join_rules': ['join_rule', 'allow'],
    'm.room.power_levels': POWER_LEVEL_KEYS_V1,
    'm.room.history_visibility': ['history_visibility'],
  },
  // rooms/v11: whole create content, power levels `invite`, redaction `redacts`,
  // member `third_party_invite.signed` (handled specially below).
  v11: {
    'm.room.member': ['membership', 'join_authorised_via_users_server'],
    'm.room.create': '*',
    'm.room.join_rules': ['join_rule', 'allow'],
    'm.room.power_levels': [...POWER_LEVEL_KEYS_V1, 'invite'],
    'm.room.history_visibility': ['history_visibility'],
    'm.room.redaction': ['redacts'],
  },
};

/**
 * The redacted form of an event under the room version's redaction algorithm. Returns a new
 * object; nested values that are kept are shared with the input, not copied.
 */
export function redactEvent<T extends JsonObject>(event: T, version: RoomVersion): JsonObject {
  const algorithm = version.redaction;
  const topLevel = algorithm === 'v11' ? TOP_LEVEL_V11 : TOP_LEVEL_V1;
  const out: JsonObject = {};
  for (const key of topLevel) {
    if (key !== 'content' && Object.prototype.hasOwnProperty.call(event, key) && event[key] !== undefined) {
      out[key] = event[key];
    }
  }
  const content = isPlainObject(event.content) ? event.content : {};
  const type = typeof event.type === 'string' ? event.type : '';
  const kept = Object.prototype.hasOwnProperty.call(CONTENT_KEYS[algorithm], type)
    ? CONTENT_KEYS[algorithm][type]
    : [];
  const newContent: JsonObject = {};
  if (kept === '*') {
    Object.assign(newContent, content);
  } else {
    for (const key of kept) {
      if (Object.prototype.hasOwnProperty.call(content, key) && content[key] !== undefined) {
        newContent[key] = content[key];
      }
    }
    // rooms/v11: "allows the `signed` key of the `third_party_invite` key".
    if (algorithm === 'v11' && type === 'm.room.member' && isPlainObject(content.third_party_invite)) {
      const tpi = content.third_party_invite;
      newContent.third_party_invite = tpi.signed !== undefined ? { signed: tpi.signed } : {};
    }
  }
  out.content = newContent;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Hashes

function canonical(value: unknown, version: RoomVersion): string {
  return canonicalJson(value, version.strictCanonicalJson);
}

function withoutKeys(obj: JsonObject, keys: string[]): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(obj)) if (!keys.includes(k)) out[k] = v;
  return out;
}

/**
 * Content hash ("Calculating the content hash for an event"): sha256 of the canonical JSON of the
 * event without `unsigned`, `signatures` and `hashes`; unpadded standard base64.
 */
export function computeContentHash(event: JsonObject, version: RoomVersion): string {
  return encodeBase64(sha256(canonical(withoutKeys(event, ['unsigned', 'signatures', 'hashes']), version)));
}

/** A copy of the event with `hashes.sha256` set to its content hash. */
export function addContentHash<T extends JsonObject>(event: T, version: RoomVersion): T & { hashes: { sha256: string } } {
  const hashes = { ...(isPlainObject(event.hashes) ? event.hashes : {}), sha256: computeContentHash(event, version) };
  return { ...event, hashes };
}

/** Whether `hashes.sha256` matches the content; a failing event must be redacted before use. */
export function checkContentHash(event: JsonObject, version: RoomVersion): boolean {
  const hashes = event.hashes;
  if (!isPlainObject(hashes) || typeof hashes.sha256 !== 'string') return false;
  try {
    return hashes.sha256 === computeContentHash(event, version);
  } catch {
    return false; // not encodable as canonical JSON for this room version
  }
}

/**
 * Reference hash ("Calculating the reference hash for an event"): redact, drop `signatures` and
 * `unsigned`, canonical JSON, sha256.
 */
export function computeReferenceHash(event: JsonObject, version: RoomVersion): Buffer {
  const redacted = redactEvent(event, version);
  return sha256(canonical(withoutKeys(redacted, ['signatures', 'unsigned']), version));
}

/**
 * The event id. v1/v2: the `event_id` the event carries (rooms/v1 "Event IDs"); v3: `$` + unpadded
 * standard base64 reference hash; v4+: `$` + URL-safe unpadded base64 reference hash.
 */
export function computeEventId(event: JsonObject, version: RoomVersion): string {
  if (version.eventIdFormat === 'v1') {
    if (typeof event.event_id !== 'string') throw new Error('v1/v2 events carry their event_id');
    return event.event_id;
  }
  const hash = computeReferenceHash(event, version);
  return '$' + (version.eventIdFormat === 'v3' ? encodeBase64(hash) : encodeBase64Url(hash));
}

const idCache = new WeakMap<object, Map<string, string>>();

/**
 * {@link computeEventId} memoised per event object. PDUs are treated as immutable: do not mutate
 * an event after asking for its id.
 */
export function eventIdOf(event: PDU, version: RoomVersion): string {
  let perVersion = idCache.get(event);
  let id = perVersion?.get(version.id);
  if (id === undefined) {
    id = computeEventId(event, version);
    if (!perVersion) idCache.set(event, (perVersion = new Map()));
    perVersion.set(version.id, id);
  }
  return id;
}

/**
 * Room id of a v12+ room: the create event's event id with the `!` sigil (rooms/v12 auth rule 1.2
 * note, appendix "Room IDs"). The version defaults to the create content's `room_version`.
 */
export function roomIdFromCreateEvent(createEvent: JsonObject, version?: RoomVersion): string {
  const content = isPlainObject(createEvent.content) ? createEvent.content : {};
  const v = version ?? (typeof content.room_version === 'string' ? getRoomVersion(content.room_version) : undefined);
  if (!v) throw new Error('unknown room version for create event');
  if (!v.roomIdFromCreateEvent) throw new Error(`room version ${v.id} room ids are not derived from the create event`);
  return '!' + computeEventId(createEvent, v).slice(1);
}

// ---------------------------------------------------------------------------------------------
// Signatures

function signingPayloadFor(event: JsonObject, version: RoomVersion): string {
  return canonical(withoutKeys(redactEvent(event, version), ['signatures', 'unsigned']), version);
}

/**
 * Signs an event ("Signing Events"): the content hash is added if the event has none, then the
 * redacted event (minus `signatures`/`unsigned`) is signed and the signature added under
 * `serverName` to a copy of the full event.
 */
export function signEvent<T extends JsonObject>(event: T, serverName: string, key: SigningKey, version: RoomVersion): T {
  const hashes = event.hashes;
  const hashed: JsonObject = isPlainObject(hashes) && typeof hashes.sha256 === 'string' ? event : addContentHash(event, version);
  const signature = signBytes(key, signingPayloadFor(hashed, version));
  const existing = isPlainObject(hashed.signatures) ? (hashed.signatures as Record<string, Record<string, string>>) : {};
  const signatures = { ...existing, [serverName]: { ...(existing[serverName] ?? {}), [key.keyId]: signature } };
  return { ...hashed, signatures } as unknown as T;
}

function eventSignatureParts(event: JsonObject, serverName: string, keyId: string, version: RoomVersion): { payload: string; sig: string } | undefined {
  const sigs = event.signatures;
  if (!isPlainObject(sigs)) return undefined;
  const forServer = sigs[serverName];
  if (!isPlainObject(forServer)) return undefined;
  const sig = forServer[keyId];
  if (typeof sig !== 'string') return undefined;
  let payload: string;
  try {
    payload = signingPayloadFor(event, version);
  } catch {
    return undefined;
  }
  return { payload, sig };
}

/** Verifies `serverName`'s signature with `keyId` over the redacted event. */
export function verifyEventSignature(event: JsonObject, serverName: string, keyId: string, publicKeyBase64: string, version: RoomVersion): boolean {
  const parts = eventSignatureParts(event, serverName, keyId, version);
  return !!parts && verifyBytes(publicKeyBase64, parts.payload, parts.sig);
}

/** verifyEventSignature with the signature check on the thread pool. */
export async function verifyEventSignatureAsync(event: JsonObject, serverName: string, keyId: string, publicKeyBase64: string, version: RoomVersion): Promise<boolean> {
  const parts = eventSignatureParts(event, serverName, keyId, version);
  return !!parts && verifyBytesAsync(publicKeyBase64, parts.payload, parts.sig);
}

/**
 * Servers whose signatures an event must carry ("Validating hashes and signatures on received
 * events"): the sender's server; for v1/v2 the `event_id`'s server; for restricted-join versions the
 * server of a member event's `join_authorised_via_users_server`.
 */
export function requiredSignatureServers(event: PDU, version: RoomVersion): string[] {
  const out = new Set<string>();
  const senderDomain = domainOf(event.sender);
  if (senderDomain) out.add(senderDomain);
  if (version.signedByEventIdDomain && typeof event.event_id === 'string') {
    const d = domainOf(event.event_id);
    if (d) out.add(d);
  }
  const via = event.content?.join_authorised_via_users_server;
  // Auth rule 5.2 (v8+) requires this signature on any member event carrying the key.
  if (version.restrictedJoin && event.type === 'm.room.member' && typeof via === 'string') {
    const d = domainOf(via);
    if (d) out.add(d);
  }
  return [...out];
}

/** The id of the event a redaction redacts (`content.redacts` from rooms/v11, top-level before). */
export function redactsOf(event: PDU, version: RoomVersion): string | undefined {
  const r = version.redactsInContent ? event.content?.redacts : event.redacts;
  return typeof r === 'string' ? r : undefined;
}

