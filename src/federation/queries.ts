// Questions asked of other servers for local clients: a server's published room directory
// (server-server API "Public Room Directory") and a space's hierarchy ("Spaces"). A remote failure becomes a Matrix error for the client: the remote's
// 400/403/404 pass through, anything else (unreachable, 5xx, a malformed answer) is 502 M_UNKNOWN.
import { MatrixError } from '../http/errors.js';
import type { PublicRoomsQuery, PublicRoomsResponse } from '../rooms/room-directory.js';
import { DestinationUnavailable, FederationError, type FederationClient } from './client.js';

/** Remote answers a waiting client depends on get less time than joins do. */
const QUERY_TIMEOUT_MS = 30_000;

export function remoteQueryError(server: string, err: unknown): MatrixError {
  if (err instanceof MatrixError) return err;
  if (err instanceof FederationError) {
    const remote = (err.body as { error?: unknown } | undefined)?.error;
    const text = typeof remote === 'string' ? remote : `${server} answered ${err.status}`;
    if (err.status === 404) return new MatrixError(404, 'M_NOT_FOUND', text);
    if (err.status === 403) return new MatrixError(403, 'M_FORBIDDEN', text);
    if (err.status === 400 && err.errcode?.startsWith('M_')) return new MatrixError(400, err.errcode, text);
    return new MatrixError(502, 'M_UNKNOWN', `${server} answered ${err.status}${err.errcode ? ` ${err.errcode}` : ''}`);
  }
  if (err instanceof DestinationUnavailable) return new MatrixError(502, 'M_UNKNOWN', `${server} is unreachable`);
  return new MatrixError(502, 'M_UNKNOWN', `Request to ${server} failed: ${(err as Error)?.message ?? String(err)}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export class FederationQueries {
  constructor(private readonly client: FederationClient) {}

  private async ask<T>(server: string, method: 'GET' | 'POST', path: string, opts: { query?: Record<string, string | number | boolean | undefined>; body?: unknown } = {}): Promise<T> {
    try {
      return await this.client.request<T>(server, method, path, { ...opts, timeoutMs: QUERY_TIMEOUT_MS });
    } catch (err) {
      throw remoteQueryError(server, err);
    }
  }

  /**
   * GET or POST /_matrix/federation/v1/publicRooms on `server`: POST when the client filters or
   * names a network (only POST carries those), GET otherwise.
   */
  async publicRooms(server: string, q: Omit<PublicRoomsQuery, 'server'>): Promise<PublicRoomsResponse> {
    const path = '/_matrix/federation/v1/publicRooms';
    const filtered = q.filter !== undefined || q.include_all_networks !== undefined || q.third_party_instance_id !== undefined;
    const res = filtered
      ? await this.ask<unknown>(server, 'POST', path, { body: q })
      : await this.ask<unknown>(server, 'GET', path, { query: { limit: q.limit, since: q.since } });
    if (!isObject(res) || !Array.isArray(res.chunk)) throw new MatrixError(502, 'M_UNKNOWN', `${server} sent a malformed room directory`);
    // Entries without the required keys would break the response schema: leave them out.
    const chunk = res.chunk.filter((c): c is PublicRoomsResponse['chunk'][number] =>
      isObject(c) && typeof c.room_id === 'string' && typeof c.num_joined_members === 'number' && typeof c.world_readable === 'boolean' && typeof c.guest_can_join === 'boolean');
    const out: PublicRoomsResponse = { chunk, total_room_count_estimate: typeof res.total_room_count_estimate === 'number' ? res.total_room_count_estimate : chunk.length };
    if (typeof res.next_batch === 'string') out.next_batch = res.next_batch;
    if (typeof res.prev_batch === 'string') out.prev_batch = res.prev_batch;
    return out;
  }

  /**
   * GET /_matrix/federation/v1/query/profile on the user's server: the whole profile, or one field.
   * Only string displayname/avatar_url and the custom fields the server sends are kept.
   */
  async profile(server: string, userId: string, field?: string): Promise<Record<string, unknown>> {
    const res = await this.ask<unknown>(server, 'GET', '/_matrix/federation/v1/query/profile', { query: { user_id: userId, field } });
    if (!isObject(res)) throw new MatrixError(502, 'M_UNKNOWN', `${server} sent a malformed profile`);
    const out: Record<string, unknown> = { ...res };
    for (const k of ['displayname', 'avatar_url']) if (k in out && typeof out[k] !== 'string') delete out[k];
    return out;
  }

  /** GET /_matrix/federation/v1/hierarchy/{roomId} on `server` (the caller checks the answer's shape). */
  async hierarchy(server: string, roomId: string, suggestedOnly: boolean): Promise<unknown> {
    return this.ask<unknown>(server, 'GET', `/_matrix/federation/v1/hierarchy/${encodeURIComponent(roomId)}`, { query: { suggested_only: suggestedOnly } });
  }
}
