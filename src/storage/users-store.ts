import type { Knex } from 'knex';
import type { UserRow, DeviceRow, AccessTokenRow, RefreshTokenRow, RegistrationTokenRow, UiaSessionRow } from './rows.js';

export class UsersStore {
  constructor(private readonly db: Knex) {}

  async userById(userId: string, q: Knex = this.db): Promise<UserRow | undefined> {
    return q<UserRow>('users').where({ user_id: userId }).first();
  }

  async insertUser(row: UserRow, q: Knex = this.db): Promise<void> {
    await q<UserRow>('users').insert(row);
  }

  async updateUser(userId: string, patch: Partial<UserRow>, q: Knex = this.db): Promise<void> {
    await q<UserRow>('users').where({ user_id: userId }).update(patch);
  }

  async countUsers(q: Knex = this.db): Promise<number> {
    const r = await q('users').count<{ n: number | string }[]>({ n: '*' });
    return Number(r[0].n);
  }

  // Devices

  async devicesOfUser(userId: string, q: Knex = this.db): Promise<DeviceRow[]> {
    return q<DeviceRow>('devices').where({ user_id: userId, hidden: false }).orderBy('device_id');
  }

  async device(userId: string, deviceId: string, q: Knex = this.db): Promise<DeviceRow | undefined> {
    return q<DeviceRow>('devices').where({ user_id: userId, device_id: deviceId }).first();
  }

  async upsertDevice(row: DeviceRow, q: Knex = this.db): Promise<boolean> {
    const inserted = await q<DeviceRow>('devices').insert(row).onConflict(['user_id', 'device_id']).ignore().returning('device_id');
    return inserted.length > 0;
  }

  async updateDevice(userId: string, deviceId: string, patch: Partial<DeviceRow>, q: Knex = this.db): Promise<number> {
    return q<DeviceRow>('devices').where({ user_id: userId, device_id: deviceId }).update(patch);
  }

  async deleteDevices(userId: string, deviceIds: string[], q: Knex = this.db): Promise<void> {
    if (!deviceIds.length) return;
    await q('access_tokens').where({ user_id: userId }).whereIn('device_id', deviceIds).delete();
    await q('refresh_tokens').where({ user_id: userId }).whereIn('device_id', deviceIds).delete();
    await q('devices').where({ user_id: userId }).whereIn('device_id', deviceIds).delete();
  }

  // Tokens

  async accessTokenByHash(hash: string, q: Knex = this.db): Promise<AccessTokenRow | undefined> {
    return q<AccessTokenRow>('access_tokens').where({ token_hash: hash }).first();
  }

  async insertAccessToken(row: Omit<AccessTokenRow, 'id'>, q: Knex = this.db): Promise<void> {
    await q('access_tokens').insert(row);
  }

  async deleteAccessTokensOfDevice(userId: string, deviceId: string, q: Knex = this.db): Promise<void> {
    await q('access_tokens').where({ user_id: userId, device_id: deviceId }).delete();
  }

  async deleteAccessTokenById(id: number, q: Knex = this.db): Promise<void> {
    await q('access_tokens').where({ id }).delete();
  }

  async refreshTokenByHash(hash: string, q: Knex = this.db): Promise<RefreshTokenRow | undefined> {
    return q<RefreshTokenRow>('refresh_tokens').where({ token_hash: hash }).first();
  }

  async insertRefreshToken(row: Omit<RefreshTokenRow, 'id'>, q: Knex = this.db): Promise<number> {
    const r = await q('refresh_tokens').insert(row).returning('id');
    const first = r[0] as { id: number } | number;
    return typeof first === 'object' ? first.id : first;
  }

  async setNextRefreshToken(id: number, nextId: number, q: Knex = this.db): Promise<void> {
    await q('refresh_tokens').where({ id }).update({ next_token_id: nextId });
  }

  async deleteRefreshToken(id: number, q: Knex = this.db): Promise<void> {
    await q('refresh_tokens').where({ id }).delete();
  }

  async insertLoginToken(hash: string, userId: string, expiresTs: number, q: Knex = this.db): Promise<void> {
    await q('login_tokens').insert({ token_hash: hash, user_id: userId, expires_ts: expiresTs });
  }

  /** Removes and returns a login token: each is good for one login. */
  async takeLoginToken(hash: string, q: Knex = this.db): Promise<{ user_id: string; expires_ts: number } | undefined> {
    const row = await q('login_tokens').where({ token_hash: hash }).first();
    if (!row) return undefined;
    const n = await q('login_tokens').where({ token_hash: hash }).delete();
    return n ? { user_id: row.user_id, expires_ts: Number(row.expires_ts) } : undefined;
  }

  // OpenID tokens (hash only)

  async insertOpenIdToken(hash: string, userId: string, expiresTs: number, q: Knex = this.db): Promise<void> {
    await q('openid_tokens').insert({ token_hash: hash, user_id: userId, expires_ts: expiresTs });
  }

  async openIdTokenByHash(hash: string, q: Knex = this.db): Promise<{ user_id: string; expires_ts: number } | undefined> {
    const row = await q('openid_tokens').where({ token_hash: hash }).first('user_id', 'expires_ts');
    return row ? { user_id: row.user_id as string, expires_ts: Number(row.expires_ts) } : undefined;
  }

  async deleteOpenIdTokensExpiredBefore(ts: number, q: Knex = this.db): Promise<number> {
    return q('openid_tokens').where('expires_ts', '<', ts).delete();
  }

  // Registration tokens

  async registrationToken(token: string, q: Knex = this.db): Promise<RegistrationTokenRow | undefined> {
    return q<RegistrationTokenRow>('registration_tokens').where({ token }).first();
  }

  async insertRegistrationToken(row: RegistrationTokenRow, q: Knex = this.db): Promise<void> {
    await q('registration_tokens').insert(row);
  }

  async incrementRegistrationToken(token: string, column: 'pending' | 'completed', by: number, q: Knex = this.db): Promise<void> {
    await q('registration_tokens').where({ token }).increment(column, by);
  }

  async listRegistrationTokens(q: Knex = this.db): Promise<RegistrationTokenRow[]> {
    return q<RegistrationTokenRow>('registration_tokens').orderBy('token');
  }

  async deleteRegistrationToken(token: string, q: Knex = this.db): Promise<number> {
    return q('registration_tokens').where({ token }).delete();
  }

  // User-interactive auth sessions

  async uiaSession(id: string, q: Knex = this.db): Promise<UiaSessionRow | undefined> {
    return q<UiaSessionRow>('uia_sessions').where({ session_id: id }).first();
  }

  async insertUiaSession(row: UiaSessionRow, q: Knex = this.db): Promise<void> {
    await q('uia_sessions').insert(row);
  }

  async updateUiaSession(id: string, patch: Partial<UiaSessionRow>, q: Knex = this.db): Promise<void> {
    await q('uia_sessions').where({ session_id: id }).update(patch);
  }

  async deleteUiaSession(id: string, q: Knex = this.db): Promise<void> {
    await q('uia_sessions').where({ session_id: id }).delete();
  }

  async deleteUiaSessionsBefore(ts: number, q: Knex = this.db): Promise<void> {
    await q('uia_sessions').where('created_ts', '<', ts).delete();
  }

  // Shared-secret registration nonces

  async insertNonce(nonce: string, ts: number, q: Knex = this.db): Promise<void> {
    await q('shared_secret_nonces').insert({ nonce, created_ts: ts });
  }

  async takeNonce(nonce: string, notBefore: number, q: Knex = this.db): Promise<boolean> {
    await q('shared_secret_nonces').where('created_ts', '<', notBefore).delete();
    return (await q('shared_secret_nonces').where({ nonce }).delete()) > 0;
  }
}
