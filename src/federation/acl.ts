// Server ACLs (spec: "Server Access Control Lists"): m.room.server_acl decides which servers may
// take part in a room.
import type { Knex } from 'knex';
import { stateKey, type StateMap } from '../rooms/event.js';
import type { RoomData } from '../rooms/room-data.js';

function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.split('').map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('')}$`, 'i');
}

/** Whether `server` may participate, given the ACL content (absent ACL: everyone). */
export function aclAllows(content: Record<string, unknown> | undefined, server: string): boolean {
  if (!content) return true;
  const host = server.replace(/:\d+$/, '');
  const isIpLiteral = /^\[.*\]$/.test(host) || /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
  if (isIpLiteral && content.allow_ip_literals === false) return false;
  const deny = Array.isArray(content.deny) ? content.deny.filter((x): x is string => typeof x === 'string') : [];
  if (deny.some((g) => globToRegExp(g).test(host))) return false;
  const allow = Array.isArray(content.allow) ? content.allow.filter((x): x is string => typeof x === 'string') : [];
  return allow.some((g) => globToRegExp(g).test(host));
}

export async function serverAllowedByAcl(data: RoomData, state: StateMap, server: string, q?: Knex): Promise<boolean> {
  const id = state.get(stateKey('m.room.server_acl', ''));
  if (!id) return true;
  const ev = await data.event(id, q);
  return aclAllows(ev?.pdu.content, server);
}
