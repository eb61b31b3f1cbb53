import type { Knex } from 'knex';

// Indexes for room features beyond the core: timestamp_to_event looks events up by
// (room, origin_server_ts); the published room directory lists rooms by is_public.

export async function up(db: Knex): Promise<void> {
  await db.schema.alterTable('events', (t) => {
    t.index(['room_nid', 'origin_server_ts'], 'events_room_ts');
  });
  await db.schema.alterTable('rooms', (t) => {
    t.index(['is_public'], 'rooms_is_public');
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.alterTable('rooms', (t) => t.dropIndex(['is_public'], 'rooms_is_public'));
  await db.schema.alterTable('events', (t) => t.dropIndex(['room_nid', 'origin_server_ts'], 'events_room_ts'));
}
