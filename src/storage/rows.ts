// Row types: snake_case columns as in migrations/.

export interface UserRow {
  user_id: string;
  localpart: string;
  password_hash: string | null;
  is_admin: boolean | number;
  is_guest: boolean | number;
  deactivated: boolean | number;
  created_ts: number | string;
  displayname: string | null;
  avatar_url: string | null;
  profile_fields: string | null;
}

export interface DeviceRow {
  user_id: string;
  device_id: string;
  display_name: string | null;
  last_seen_ip: string | null;
  last_seen_user_agent: string | null;
  last_seen_ts: number | string | null;
  created_ts: number | string;
  hidden: boolean | number;
}

export interface AccessTokenRow {
  id: number;
  token_hash: string;
  user_id: string;
  device_id: string;
  created_ts: number | string;
  expires_ts: number | string | null;
  refresh_token_id: number | null;
}

export interface RefreshTokenRow {
  id: number;
  token_hash: string;
  user_id: string;
  device_id: string;
  next_token_id: number | null;
  created_ts: number | string;
}

export interface RegistrationTokenRow {
  token: string;
  uses_allowed: number | null;
  pending: number;
  completed: number;
  expiry_time: number | string | null;
}

export interface UiaSessionRow {
  session_id: string;
  user_id: string | null;
  uri: string;
  completed: string;
  data: string;
  created_ts: number | string;
}

export interface AccountDataRow {
  user_id: string;
  room_id: string;
  type: string;
  content: string;
  stream_id: number | string;
}

/** PostgreSQL returns bigint columns as strings; SQLite as numbers. */
export const num = (v: number | string | null | undefined): number => (v === null || v === undefined ? 0 : Number(v));
export const bool = (v: boolean | number | null | undefined): boolean => v === true || v === 1;
