// Request bodies of the key backup endpoints (spec key_backup.yaml, definitions/key_backup_data.yaml,
// room_key_backup.yaml).
import { compile } from '../http/validate.js';

export const KeyBackupDataSchema = {
  type: 'object',
  required: ['first_message_index', 'forwarded_count', 'is_verified', 'session_data'],
  properties: {
    first_message_index: { type: 'integer', minimum: 0, maximum: 2147483647 },
    forwarded_count: { type: 'integer', minimum: 0, maximum: 2147483647 },
    is_verified: { type: 'boolean' },
    session_data: { type: 'object' },
  },
} as const;

export const RoomKeyBackupSchema = {
  type: 'object',
  required: ['sessions'],
  properties: { sessions: { type: 'object', additionalProperties: KeyBackupDataSchema } },
} as const;

export const PutSessionKeyBody = compile(KeyBackupDataSchema);
export const PutRoomKeysBody = compile(RoomKeyBackupSchema);
export const PutAllKeysBody = compile({
  type: 'object',
  required: ['rooms'],
  properties: { rooms: { type: 'object', additionalProperties: RoomKeyBackupSchema } },
});

export const CreateVersionBody = compile({
  type: 'object',
  required: ['algorithm', 'auth_data'],
  properties: { algorithm: { type: 'string', minLength: 1, maxLength: 255 }, auth_data: { type: 'object' } },
});

export const UpdateVersionBody = compile({
  type: 'object',
  required: ['algorithm', 'auth_data'],
  properties: { algorithm: { type: 'string' }, auth_data: { type: 'object' }, version: { type: 'string' } },
});
