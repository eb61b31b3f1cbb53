export const CreateRoomBody = {
  type: 'object',
  properties: {
    visibility: { enum: ['public', 'private'] },
    room_alias_name: { type: 'string', maxLength: 255 },
    name: { type: 'string', maxLength: 1000 },
    topic: { type: 'string', maxLength: 10000 },
    invite: { type: 'array', items: { type: 'string' }, maxItems: 1000 },
    invite_3pid: { type: 'array' },
    room_version: { type: 'string' },
    creation_content: { type: 'object' },
    initial_state: {
      type: 'array',
      items: {
        type: 'object',
        required: ['type', 'content'],
        properties: { type: { type: 'string' }, state_key: { type: 'string' }, content: { type: 'object' } },
      },
    },
    preset: { enum: ['private_chat', 'public_chat', 'trusted_private_chat'] },
    is_direct: { type: 'boolean' },
    power_level_content_override: { type: 'object' },
  },
} as const;

export const MembershipBody = {
  type: 'object',
  required: ['user_id'],
  properties: { user_id: { type: 'string', pattern: '^@[^:]+:.+$' }, reason: { type: 'string' } },
} as const;

export const InviteBody = {
  type: 'object',
  properties: { user_id: { type: 'string', pattern: '^@[^:]+:.+$' }, reason: { type: 'string' }, id_server: { type: 'string' }, medium: { type: 'string' }, address: { type: 'string' } },
} as const;

export const ReasonBody = { type: 'object', properties: { reason: { type: 'string' } } } as const;

export const AliasBody = { type: 'object', required: ['room_id'], properties: { room_id: { type: 'string', pattern: '^!' } } } as const;

export const VisibilityBody = { type: 'object', properties: { visibility: { enum: ['public', 'private'] } } } as const;

export const UpgradeBody = {
  type: 'object',
  required: ['new_version'],
  properties: { new_version: { type: 'string' }, additional_creators: { type: 'array', items: { type: 'string' } } },
} as const;
