// Request bodies of the key management, cross-signing and dehydrated-device endpoints, after the
// spec's keys.yaml, cross_signing.yaml and definitions/{device_keys,one_time_keys,cross_signing_key}.yaml.
import { compile } from '../http/validate.js';

const signatures = { type: 'object', additionalProperties: { type: 'object', additionalProperties: { type: 'string' } } } as const;

export const DeviceKeysSchema = {
  type: 'object',
  required: ['user_id', 'device_id', 'algorithms', 'keys', 'signatures'],
  properties: {
    user_id: { type: 'string' },
    device_id: { type: 'string' },
    algorithms: { type: 'array', items: { type: 'string' } },
    keys: { type: 'object', additionalProperties: { type: 'string' } },
    signatures,
  },
} as const;

export const OneTimeKeysSchema = {
  type: 'object',
  additionalProperties: {
    anyOf: [
      { type: 'string' },
      { type: 'object', required: ['key', 'signatures'], properties: { key: { type: 'string' }, signatures, fallback: { type: 'boolean' } } },
    ],
  },
} as const;

const keysUploadProperties = {
  device_keys: DeviceKeysSchema,
  one_time_keys: OneTimeKeysSchema,
  fallback_keys: OneTimeKeysSchema,
} as const;

export const KeysUploadBody = compile({ type: 'object', properties: keysUploadProperties });

const timeout = { type: 'integer', minimum: 0 } as const;

export const KeysQueryBody = compile({
  type: 'object',
  required: ['device_keys'],
  properties: {
    timeout,
    device_keys: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string' } } },
  },
});

export const KeysClaimBody = compile({
  type: 'object',
  required: ['one_time_keys'],
  properties: {
    timeout,
    one_time_keys: { type: 'object', additionalProperties: { type: 'object', additionalProperties: { type: 'string' } } },
  },
});

export const CrossSigningKeySchema = {
  type: 'object',
  required: ['user_id', 'usage', 'keys'],
  properties: {
    user_id: { type: 'string' },
    usage: { type: 'array', minItems: 1, items: { type: 'string', enum: ['master', 'self_signing', 'user_signing'] } },
    keys: { type: 'object', minProperties: 1, maxProperties: 1, additionalProperties: { type: 'string' } },
    signatures,
  },
} as const;

export const DeviceSigningUploadBody = compile({
  type: 'object',
  properties: {
    master_key: CrossSigningKeySchema,
    self_signing_key: CrossSigningKeySchema,
    user_signing_key: CrossSigningKeySchema,
    auth: { type: 'object' },
  },
});

/** user id → key id → signed object; each object is checked by the service, failures reported per key. */
export const SignaturesUploadBody = compile({
  type: 'object',
  additionalProperties: { type: 'object', additionalProperties: { type: 'object' } },
});

// MSC3814 dehydrated devices.

export const DehydratedDevicePutBody = compile({
  type: 'object',
  required: ['device_id', 'device_data'],
  properties: {
    device_id: { type: 'string', minLength: 1, maxLength: 255 },
    device_data: { type: 'object', required: ['algorithm'], properties: { algorithm: { type: 'string' } } },
    initial_device_display_name: { type: 'string', maxLength: 1000 },
    ...keysUploadProperties,
  },
});

export const DehydratedEventsBody = compile({
  type: 'object',
  properties: { next_batch: { type: 'string' } },
});
