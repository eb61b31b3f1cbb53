// Request bodies of the account endpoints. Unknown keys are allowed, as the spec lets clients add them.

const authDict = { type: 'object' } as const;

export const RegisterBody = {
  type: 'object',
  properties: {
    auth: authDict,
    username: { type: 'string', maxLength: 255 },
    password: { type: 'string', maxLength: 512 },
    device_id: { type: 'string', minLength: 1, maxLength: 255 },
    initial_device_display_name: { type: 'string', maxLength: 1000 },
    inhibit_login: { type: 'boolean' },
    refresh_token: { type: 'boolean' },
  },
} as const;

export interface RegisterRequest {
  auth?: Record<string, unknown>;
  username?: string;
  password?: string;
  device_id?: string;
  initial_device_display_name?: string;
  inhibit_login?: boolean;
  refresh_token?: boolean;
}

export const LoginBody = {
  type: 'object',
  required: ['type'],
  properties: {
    type: { type: 'string' },
    identifier: {
      type: 'object',
      required: ['type'],
      properties: { type: { type: 'string' }, user: { type: 'string' } },
    },
    user: { type: 'string' },
    password: { type: 'string', maxLength: 512 },
    token: { type: 'string' },
    device_id: { type: 'string', minLength: 1, maxLength: 255 },
    initial_device_display_name: { type: 'string', maxLength: 1000 },
    refresh_token: { type: 'boolean' },
  },
} as const;

export interface LoginRequest {
  type: string;
  identifier?: { type: string; user?: string; medium?: string; address?: string };
  user?: string;
  password?: string;
  token?: string;
  device_id?: string;
  initial_device_display_name?: string;
  refresh_token?: boolean;
}

export const RefreshBody = {
  type: 'object',
  required: ['refresh_token'],
  properties: { refresh_token: { type: 'string' } },
} as const;

export const PasswordBody = {
  type: 'object',
  required: ['new_password'],
  properties: { new_password: { type: 'string', minLength: 1, maxLength: 512 }, logout_devices: { type: 'boolean' }, auth: authDict },
} as const;

export const DeactivateBody = {
  type: 'object',
  properties: { auth: authDict, erase: { type: 'boolean' }, id_server: { type: 'string' } },
} as const;

export const AuthOnlyBody = { type: 'object', properties: { auth: authDict } } as const;

export const DeleteDevicesBody = {
  type: 'object',
  required: ['devices'],
  properties: { devices: { type: 'array', items: { type: 'string' } }, auth: authDict },
} as const;

export const RenameDeviceBody = {
  type: 'object',
  properties: { display_name: { type: ['string', 'null'], maxLength: 1000 } },
} as const;

export const SharedSecretRegisterBody = {
  type: 'object',
  required: ['nonce', 'username', 'password', 'mac'],
  properties: {
    nonce: { type: 'string' },
    username: { type: 'string', minLength: 1 },
    displayname: { type: 'string' },
    password: { type: 'string', minLength: 1 },
    admin: { type: 'boolean' },
    user_type: { type: ['string', 'null'] },
    mac: { type: 'string' },
  },
} as const;
