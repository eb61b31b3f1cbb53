import { randomBytes } from 'node:crypto';
import { sha256Hex } from '../crypto/hashes.js';

/** Opaque random token; only its SHA-256 is ever stored. */
export function newToken(prefix: string): string {
  return `${prefix}_${randomBytes(24).toString('base64url')}`;
}

export const hashToken = (token: string): string => sha256Hex(token);

export function newDeviceId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const bytes = randomBytes(10);
  let s = '';
  for (const b of bytes) s += alphabet[b % 26];
  return s;
}

export function randomString(n: number): string {
  return randomBytes(Math.ceil((n * 3) / 4) + 1).toString('base64url').slice(0, n);
}

// User identifiers (spec appendix "User Identifiers"): the historical grammar is accepted for
// existing users; new localparts use the strict one.
const STRICT_LOCALPART = /^[a-z0-9._=\-/+]+$/;

export function isValidNewLocalpart(localpart: string): boolean {
  return localpart.length > 0 && STRICT_LOCALPART.test(localpart);
}

export function parseUserId(userId: string): { localpart: string; server: string } | null {
  const m = /^@([^:]+):(.+)$/.exec(userId);
  return m ? { localpart: m[1], server: m[2] } : null;
}

/** Splits a map keyed by user id into this server's users and the other servers' (by server name). */
export function splitByServer<T>(byUser: Record<string, T>, ownServer: string): { local: Record<string, T>; remote: Map<string, Record<string, T>> } {
  const local: Record<string, T> = {};
  const remote = new Map<string, Record<string, T>>();
  for (const [userId, value] of Object.entries(byUser)) {
    const server = parseUserId(userId)?.server;
    if (!server) continue;
    if (server === ownServer) local[userId] = value;
    else {
      let forServer = remote.get(server);
      if (!forServer) remote.set(server, (forServer = {}));
      forServer[userId] = value;
    }
  }
  return { local, remote };
}
