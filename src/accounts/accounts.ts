// Accounts, devices and tokens: registration, login, token auth, refresh, logout, password change,
// deactivation. Tokens are opaque; only their SHA-256 is stored.
import type { Knex } from 'knex';
import { MatrixError, forbidden, unknownToken } from '../http/errors.js';
import type { UsersStore } from '../storage/users-store.js';
import { bool, num, type DeviceRow, type UserRow } from '../storage/rows.js';
import { hashPassword, verifyPassword } from './passwords.js';
import { hashToken, isValidNewLocalpart, newDeviceId, newToken, parseUserId, randomString } from './ids.js';
import { isUniqueViolation } from '../storage/db.js';

export interface Requester {
  userId: string;
  deviceId: string;
  isAdmin: boolean;
  isGuest: boolean;
  tokenId: number;
}

export interface LoginResult {
  user_id: string;
  device_id: string;
  access_token: string;
  refresh_token?: string;
  expires_in_ms?: number;
}

export interface AccountHooks {
  /** A device appeared, changed its name or was removed (device-list stream, E2EE keys). */
  devicesChanged?(userId: string, deviceIds: string[], removed: boolean): Promise<void>;
  /** The account is being deactivated: leave rooms, drop keys and push state. */
  deactivating?(userId: string, erase: boolean): Promise<void>;
}

const DEVICE_TOUCH_INTERVAL_MS = 60_000;
const TOKEN_CACHE_MS = 5_000;
/** The spec's example and Synapse's lifetime for OpenID tokens: one hour. */
const OPENID_TOKEN_LIFETIME_MS = 3_600_000;

export class Accounts {
  private readonly lastTouch = new Map<string, number>();
  private readonly tokenCache = new Map<string, { requester: Requester; until: number; expiresTs: number | null }>();
  hooks: AccountHooks = {};

  constructor(
    private readonly db: Knex,
    private readonly users: UsersStore,
    private readonly serverName: string,
    private readonly accessTokenLifetimeMs: number,
  ) {}

  userIdFor(localpart: string): string {
    return `@${localpart}:${this.serverName}`;
  }

  isLocalUser(userId: string): boolean {
    return parseUserId(userId)?.server === this.serverName;
  }

  async user(userId: string): Promise<UserRow | undefined> {
    return this.users.userById(userId);
  }

  /** Validates a localpart for a new account; throws the spec's registration errors. */
  async checkUsernameAvailable(localpart: string): Promise<string> {
    const lp = localpart.toLowerCase();
    if (!isValidNewLocalpart(lp)) throw new MatrixError(400, 'M_INVALID_USERNAME', 'User ID may only contain a-z, 0-9, . _ = - / +');
    const userId = this.userIdFor(lp);
    if (userId.length > 255) throw new MatrixError(400, 'M_INVALID_USERNAME', 'User ID is too long');
    if (await this.users.userById(userId)) throw new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken.');
    return lp;
  }

  async register(opts: {
    localpart?: string | null;
    password?: string | null;
    admin?: boolean;
    guest?: boolean;
    displayname?: string | null;
  }): Promise<string> {
    let localpart: string;
    if (opts.localpart) {
      localpart = await this.checkUsernameAvailable(opts.localpart);
    } else {
      // Generated localparts are numeric, as Synapse's are, for guests and username-less registration.
      do {
        localpart = String(Math.floor(Math.random() * 1e10));
      } while (await this.users.userById(this.userIdFor(localpart)));
    }
    const userId = this.userIdFor(localpart);
    const passwordHash = opts.password ? await hashPassword(opts.password) : null;
    try {
      await this.users.insertUser({
        user_id: userId,
        localpart,
        password_hash: passwordHash,
        is_admin: !!opts.admin,
        is_guest: !!opts.guest,
        deactivated: false,
        created_ts: Date.now(),
        displayname: opts.displayname ?? localpart,
        avatar_url: null,
        profile_fields: null,
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken.');
      throw err;
    }
    return userId;
  }

  /** Resolves a login identifier (localpart or full user id) to a local user id. */
  resolveUser(user: string): string {
    if (user.startsWith('@')) return user.toLowerCase() === user ? user : user;
    return this.userIdFor(user.toLowerCase());
  }

  /** Checks a password; returns the user id on success, null otherwise. */
  async checkPassword(userId: string, password: string): Promise<string | null> {
    const row = await this.users.userById(userId) ?? (userId !== userId.toLowerCase() ? await this.users.userById(userId.toLowerCase()) : undefined);
    if (!row) {
      await hashPassword(password); // same work either way, so timing does not reveal which users exist
      return null;
    }
    if (bool(row.deactivated)) return null;
    return (await verifyPassword(password, row.password_hash)) ? row.user_id : null;
  }

  async setPassword(userId: string, password: string): Promise<void> {
    await this.users.updateUser(userId, { password_hash: await hashPassword(password) });
  }

  /** Creates (or takes over) a device and issues tokens for it. */
  async login(userId: string, opts: { deviceId?: string | null; displayName?: string | null; refreshToken?: boolean; ip?: string; userAgent?: string } = {}): Promise<LoginResult> {
    const deviceId = opts.deviceId || newDeviceId();
    const now = Date.now();
    const accessToken = newToken('syt');
    const result: LoginResult = { user_id: userId, device_id: deviceId, access_token: accessToken };
    let created = false;
    await this.db.transaction(async (trx) => {
      created = await this.users.upsertDevice({
        user_id: userId,
        device_id: deviceId,
        display_name: opts.displayName ?? null,
        last_seen_ip: opts.ip ?? null,
        last_seen_user_agent: opts.userAgent ?? null,
        last_seen_ts: now,
        created_ts: now,
        hidden: false,
      }, trx);
      if (!created) {
        // Logging in with an existing device id invalidates that device's earlier tokens.
        await this.users.deleteAccessTokensOfDevice(userId, deviceId, trx);
        if (opts.displayName) await this.users.updateDevice(userId, deviceId, { display_name: opts.displayName }, trx);
      }
      let refreshTokenId: number | null = null;
      if (opts.refreshToken) {
        const refreshToken = newToken('syr');
        refreshTokenId = await this.users.insertRefreshToken({
          token_hash: hashToken(refreshToken), user_id: userId, device_id: deviceId, next_token_id: null, created_ts: now,
        }, trx);
        result.refresh_token = refreshToken;
        result.expires_in_ms = this.accessTokenLifetimeMs;
      }
      await this.users.insertAccessToken({
        token_hash: hashToken(accessToken),
        user_id: userId,
        device_id: deviceId,
        created_ts: now,
        expires_ts: opts.refreshToken ? now + this.accessTokenLifetimeMs : null,
        refresh_token_id: refreshTokenId,
      }, trx);
    });
    if (!created) this.forgetTokens(userId, [deviceId]);
    if (created || opts.displayName) await this.hooks.devicesChanged?.(userId, [deviceId], false);
    return result;
  }

  /**
   * Looks up an access token. Expired tokens get M_UNKNOWN_TOKEN with soft_logout. Lookups are
   * cached briefly (keyed by the token's hash); logging out in this process drops them at once,
   * another process sharing the database sees a logout within TOKEN_CACHE_MS.
   */
  async authenticate(token: string): Promise<Requester> {
    const hash = hashToken(token);
    const now = Date.now();
    const hit = this.tokenCache.get(hash);
    if (hit && hit.until > now && (hit.expiresTs === null || hit.expiresTs > now)) return hit.requester;
    const row = await this.users.accessTokenByHash(hash);
    if (!row) throw unknownToken();
    const expiresTs = row.expires_ts === null ? null : num(row.expires_ts);
    if (expiresTs !== null && expiresTs <= now) throw unknownToken('Access token has expired', true);
    const user = await this.users.userById(row.user_id);
    if (!user || bool(user.deactivated)) throw unknownToken('User account has been deactivated');
    const requester = { userId: row.user_id, deviceId: row.device_id, isAdmin: bool(user.is_admin), isGuest: bool(user.is_guest), tokenId: row.id };
    if (this.tokenCache.size > 50_000) this.tokenCache.clear();
    this.tokenCache.set(hash, { requester, until: now + TOKEN_CACHE_MS, expiresTs });
    return requester;
  }

  /** Drops cached token lookups of a user's devices (after logout, deletion, deactivation). */
  private forgetTokens(userId: string, deviceIds?: readonly string[]): void {
    for (const [k, v] of this.tokenCache) {
      if (v.requester.userId === userId && (!deviceIds || deviceIds.includes(v.requester.deviceId))) this.tokenCache.delete(k);
    }
  }

  /** Records last-seen data at most once a minute per device. */
  async touchDevice(req: Requester, ip: string, userAgent: string | undefined): Promise<void> {
    const key = `${req.userId}|${req.deviceId}`;
    const now = Date.now();
    if ((this.lastTouch.get(key) ?? 0) > now - DEVICE_TOUCH_INTERVAL_MS) return;
    this.lastTouch.set(key, now);
    if (this.lastTouch.size > 100_000) this.lastTouch.clear();
    await this.users.updateDevice(req.userId, req.deviceId, { last_seen_ip: ip, last_seen_user_agent: userAgent ?? null, last_seen_ts: now });
  }

  /**
   * Exchanges a refresh token for a new access/refresh pair (spec: /refresh). The old refresh token
   * stays usable until the new access token is first used, so a lost response does not log out.
   */
  async refresh(refreshToken: string): Promise<{ access_token: string; refresh_token: string; expires_in_ms: number }> {
    const row = await this.users.refreshTokenByHash(hashToken(refreshToken));
    if (!row) throw unknownToken('Unknown refresh token');
    if (row.next_token_id !== null) {
      // Already exchanged once: the replacement has been used (otherwise we'd have cleared it).
      throw unknownToken('Refresh token has been used');
    }
    const user = await this.users.userById(row.user_id);
    if (!user || bool(user.deactivated)) throw unknownToken('User account has been deactivated');
    const now = Date.now();
    const access = newToken('syt');
    const refresh = newToken('syr');
    await this.db.transaction(async (trx) => {
      const newId = await this.users.insertRefreshToken({
        token_hash: hashToken(refresh), user_id: row.user_id, device_id: row.device_id, next_token_id: null, created_ts: now,
      }, trx);
      await this.users.insertAccessToken({
        token_hash: hashToken(access), user_id: row.user_id, device_id: row.device_id, created_ts: now,
        expires_ts: now + this.accessTokenLifetimeMs, refresh_token_id: newId,
      }, trx);
      // The old pair is retired: its access tokens go, the refresh token is removed.
      await trx('access_tokens').where({ refresh_token_id: row.id }).delete();
      await this.users.deleteRefreshToken(row.id, trx);
    });
    this.forgetTokens(row.user_id, [row.device_id]);
    return { access_token: access, refresh_token: refresh, expires_in_ms: this.accessTokenLifetimeMs };
  }

  async logout(req: Requester): Promise<void> {
    await this.deleteDevices(req.userId, [req.deviceId]);
  }

  async logoutAll(userId: string): Promise<void> {
    const devices = await this.users.devicesOfUser(userId);
    await this.deleteDevices(userId, devices.map((d) => d.device_id));
  }

  async createLoginToken(userId: string, ttlMs: number): Promise<string> {
    const token = newToken('syl');
    await this.users.insertLoginToken(hashToken(token), userId, Date.now() + ttlMs);
    return token;
  }

  async redeemLoginToken(token: string): Promise<string> {
    const row = await this.users.takeLoginToken(hashToken(token));
    if (!row || row.expires_ts < Date.now()) throw forbidden('Invalid or expired login token');
    return row.user_id;
  }

  // OpenID (client-server API "OpenID"): tokens a third party exchanges for the user's ID.

  /** POST /user/{userId}/openid/request_token: a new token, valid for OPENID_TOKEN_LIFETIME_MS. */
  async createOpenIdToken(userId: string): Promise<{ access_token: string; token_type: 'Bearer'; matrix_server_name: string; expires_in: number }> {
    const token = newToken('syo');
    const now = Date.now();
    // Expired tokens are swept as new ones are made; a lookup checks expiry anyway.
    await this.users.deleteOpenIdTokensExpiredBefore(now);
    await this.users.insertOpenIdToken(hashToken(token), userId, now + OPENID_TOKEN_LIFETIME_MS);
    return { access_token: token, token_type: 'Bearer', matrix_server_name: this.serverName, expires_in: OPENID_TOKEN_LIFETIME_MS / 1000 };
  }

  /** GET /_matrix/federation/v1/openid/userinfo: the owner of a live token, else 401 M_UNKNOWN_TOKEN. */
  async openIdUser(token: string): Promise<string> {
    const row = await this.users.openIdTokenByHash(hashToken(token));
    if (!row || row.expires_ts <= Date.now()) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Access token unknown or expired');
    const user = await this.users.userById(row.user_id);
    if (!user || bool(user.deactivated)) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Access token unknown or expired');
    return row.user_id;
  }

  // Devices

  async devices(userId: string): Promise<DeviceRow[]> {
    return this.users.devicesOfUser(userId);
  }

  async device(userId: string, deviceId: string): Promise<DeviceRow | undefined> {
    const d = await this.users.device(userId, deviceId);
    return d && !bool(d.hidden) ? d : undefined;
  }

  async renameDevice(userId: string, deviceId: string, name: string | null): Promise<boolean> {
    const n = await this.users.updateDevice(userId, deviceId, { display_name: name });
    if (n) await this.hooks.devicesChanged?.(userId, [deviceId], false);
    return n > 0;
  }

  async deleteDevices(userId: string, deviceIds: string[]): Promise<void> {
    if (!deviceIds.length) return;
    await this.db.transaction((trx) => this.users.deleteDevices(userId, deviceIds, trx));
    this.forgetTokens(userId, deviceIds);
    for (const d of deviceIds) this.lastTouch.delete(`${userId}|${d}`);
    await this.hooks.devicesChanged?.(userId, deviceIds, true);
  }

  async changePassword(userId: string, newPassword: string, logoutDevices: boolean, keepDeviceId: string | null): Promise<void> {
    await this.setPassword(userId, newPassword);
    if (logoutDevices) {
      const devices = await this.users.devicesOfUser(userId);
      await this.deleteDevices(userId, devices.map((d) => d.device_id).filter((d) => d !== keepDeviceId));
    }
  }

  async deactivate(userId: string, erase: boolean): Promise<void> {
    await this.hooks.deactivating?.(userId, erase);
    await this.logoutAll(userId);
    const patch: Partial<UserRow> = { deactivated: true, password_hash: null };
    // Erasure removes what identifies the person; without it the profile stays readable, as in Synapse.
    if (erase) Object.assign(patch, { displayname: null, avatar_url: null, profile_fields: null });
    else Object.assign(patch, { displayname: null, avatar_url: null });
    await this.users.updateUser(userId, patch);
  }

  // Registration tokens (the registration_token UIA stage and the admin commands)

  async createRegistrationToken(opts: { token?: string; usesAllowed?: number | null; expiryTime?: number | null }): Promise<string> {
    const token = opts.token ?? randomString(16);
    if (!/^[A-Za-z0-9._~-]{1,64}$/.test(token)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Token must be 1-64 characters of [A-Za-z0-9._~-]');
    await this.users.insertRegistrationToken({ token, uses_allowed: opts.usesAllowed ?? null, pending: 0, completed: 0, expiry_time: opts.expiryTime ?? null });
    return token;
  }

  async registrationTokenValid(token: string): Promise<boolean> {
    const row = await this.users.registrationToken(token);
    if (!row) return false;
    if (row.expiry_time !== null && num(row.expiry_time) <= Date.now()) return false;
    if (row.uses_allowed !== null && row.pending + row.completed >= row.uses_allowed) return false;
    return true;
  }
}
