// Request bodies of the room directory endpoints (directory.yaml, list_public_rooms.yaml).
export const PublicRoomsBody = {
  type: 'object',
  properties: {
    limit: { type: 'integer', minimum: 0 },
    since: { type: 'string' },
    filter: {
      type: 'object',
      properties: {
        generic_search_term: { type: 'string' },
        room_types: { type: 'array', items: { type: ['string', 'null'] } },
      },
    },
    include_all_networks: { type: 'boolean' },
    third_party_instance_id: { type: 'string' },
  },
} as const;
