// Other servers' signing keys and the signed key responses they came in (migration 0007).
import type { Knex } from 'knex';

export interface RemoteServerKeyRow {
  server_name: string;
  key_id: string;
  key: string;
  valid_until_ts: number | string;
  expired_ts: number | string | null;
  fetched_ts: number | string;
}

export interface RemoteServerKeyJsonRow {
  server_name: string;
  valid_until_ts: number | string;
  fetched_ts: number | string;
  key_json: string;
}

export class FederationKeysStore {
  constructor(private readonly db: Knex) {}

  async keysOf(serverName: string, q: Knex = this.db): Promise<RemoteServerKeyRow[]> {
    return q<RemoteServerKeyRow>('remote_server_keys').where({ server_name: serverName });
  }

  /**
   * Inserts or widens keys. A key id names one key forever, so an existing row keeps its key; its
   * validity only grows (the greater valid_until_ts wins) and an expiry, once seen, stays.
   * `excluded` (the proposed row) and CASE work alike on SQLite and PostgreSQL.
   */
  async upsertKeys(rows: RemoteServerKeyRow[], q: Knex = this.db): Promise<void> {
    if (!rows.length) return;
    await q('remote_server_keys')
      .insert(rows)
      .onConflict(['server_name', 'key_id'])
      .merge({
        valid_until_ts: q.raw('CASE WHEN excluded.valid_until_ts > remote_server_keys.valid_until_ts THEN excluded.valid_until_ts ELSE remote_server_keys.valid_until_ts END'),
        expired_ts: q.raw('COALESCE(excluded.expired_ts, remote_server_keys.expired_ts)'),
        fetched_ts: q.raw('excluded.fetched_ts'),
      });
  }

  async keyJson(serverName: string, q: Knex = this.db): Promise<RemoteServerKeyJsonRow | undefined> {
    return q<RemoteServerKeyJsonRow>('remote_server_key_json').where({ server_name: serverName }).first();
  }

  /** Keeps the response valid the longest: an older copy relayed by a notary does not replace a fresher one. */
  async upsertKeyJson(row: RemoteServerKeyJsonRow, q: Knex = this.db): Promise<void> {
    const newer = 'excluded.valid_until_ts >= remote_server_key_json.valid_until_ts';
    await q('remote_server_key_json')
      .insert(row)
      .onConflict('server_name')
      .merge({
        key_json: q.raw(`CASE WHEN ${newer} THEN excluded.key_json ELSE remote_server_key_json.key_json END`),
        fetched_ts: q.raw(`CASE WHEN ${newer} THEN excluded.fetched_ts ELSE remote_server_key_json.fetched_ts END`),
        valid_until_ts: q.raw(`CASE WHEN ${newer} THEN excluded.valid_until_ts ELSE remote_server_key_json.valid_until_ts END`),
      });
  }
}
