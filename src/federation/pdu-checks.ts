// The checks every PDU passes on receipt (server-server API: "Checks performed on receipt of a
// PDU"): format and size, signatures, content hash. Auth checks follow in the receiver.
import { canonicalJson } from '../crypto/canonical-json.js';
import { isPlainObject, isValidUserId, type PDU } from '../rooms/event.js';
import { checkContentHash, eventIdOf, redactEvent, requiredSignatureServers, verifyEventSignatureAsync } from '../rooms/hashing.js';
import type { RoomVersion } from '../rooms/versions.js';
import type { KeyLookup } from './interfaces.js';

export class PduRejected extends Error {}

const MAX_PDU_BYTES = 65536;

/** Format checks: the shape of the event format of the room version, and the 64 KiB limit. */
export function checkFormat(raw: unknown, version: RoomVersion): PDU {
  if (!isPlainObject(raw)) throw new PduRejected('PDU is not an object');
  const p = raw as PDU;
  if (typeof p.type !== 'string' || p.type.length > 255) throw new PduRejected('bad type');
  if (!isValidUserId(p.sender) || p.sender.length > 255) throw new PduRejected('bad sender');
  if (!(p.type === 'm.room.create' && version.roomIdFromCreateEvent) && (typeof p.room_id !== 'string' || !p.room_id.startsWith('!'))) throw new PduRejected('bad room_id');
  if (!Number.isSafeInteger(p.depth) || p.depth < 0) throw new PduRejected('bad depth');
  if (!Number.isSafeInteger(p.origin_server_ts)) throw new PduRejected('bad origin_server_ts');
  if (!Array.isArray(p.prev_events) || !Array.isArray(p.auth_events)) throw new PduRejected('bad prev_events/auth_events');
  if (p.prev_events.length > 20 || p.auth_events.length > 10) throw new PduRejected('too many prev_events/auth_events');
  if (!isPlainObject(p.content)) throw new PduRejected('bad content');
  if (!isPlainObject(p.hashes) || typeof p.hashes.sha256 !== 'string') throw new PduRejected('bad hashes');
  if (!isPlainObject(p.signatures)) throw new PduRejected('bad signatures');
  if (p.state_key !== undefined && typeof p.state_key !== 'string') throw new PduRejected('bad state_key');
  if (version.eventIdFormat === 'v1' && typeof p.event_id !== 'string') throw new PduRejected('missing event_id');
  let bytes: number;
  try {
    const { unsigned: _u, ...rest } = p;
    bytes = Buffer.byteLength(canonicalJson(rest, version.strictCanonicalJson));
  } catch {
    throw new PduRejected('not canonical JSON');
  }
  if (bytes > MAX_PDU_BYTES) throw new PduRejected('PDU larger than 64 KiB');
  return p;
}

/**
 * Verifies the signatures the event must carry. Throws PduRejected when one is missing or does not
 * verify. Room versions 5+ need keys valid at origin_server_ts.
 */
export async function checkSignatures(pdu: PDU, version: RoomVersion, keys: KeyLookup): Promise<void> {
  for (const server of requiredSignatureServers(pdu, version)) {
    const sigs = pdu.signatures?.[server];
    if (!isPlainObject(sigs)) throw new PduRejected(`not signed by ${server}`);
    let ok = false;
    for (const keyId of Object.keys(sigs)) {
      if (!keyId.startsWith('ed25519:')) continue;
      const key = await keys.publicKey(server, keyId, version.enforceKeyValidity ? pdu.origin_server_ts : undefined).catch(() => undefined);
      if (key && await verifyEventSignatureAsync(pdu as unknown as Record<string, unknown>, server, keyId, key, version)) {
        ok = true;
        break;
      }
    }
    if (!ok) throw new PduRejected(`bad or unverifiable signature from ${server}`);
  }
}

/** Content hash check: a mismatch means the event is used in its redacted form. */
export function applyContentHash(pdu: PDU, version: RoomVersion): { pdu: PDU; redacted: boolean } {
  if (checkContentHash(pdu as unknown as Record<string, unknown>, version)) return { pdu, redacted: false };
  const redacted = redactEvent(pdu as unknown as Record<string, unknown>, version) as unknown as PDU;
  return { pdu: redacted, redacted: true };
}

/** All three, returning the event as it should be used and its id. */
export async function checkReceivedPdu(raw: unknown, version: RoomVersion, keys: KeyLookup): Promise<{ pdu: PDU; eventId: string; redacted: boolean }> {
  const formatted = checkFormat(raw, version);
  await checkSignatures(formatted, version, keys);
  const { pdu, redacted } = applyContentHash(formatted, version);
  return { pdu, eventId: eventIdOf(formatted, version), redacted };
}
