import type { Knex } from 'knex';

// Rooms and events. Rooms are referenced by a small integer (room_nid) so that per-event rows and
// indexes stay compact; events likewise (event_nid). State is stored as state groups: a snapshot, or
// a delta against a parent group with a bounded chain, shared by every event that has that state.

export async function up(db: Knex): Promise<void> {
  await db.schema.createTable('rooms', (t) => {
    t.increments('room_nid').primary();
    t.string('room_id').notNullable().unique();
    t.string('room_version').notNullable();
    t.string('creator');
    t.bigInteger('created_ts').notNullable();
    t.boolean('is_public').notNullable().defaultTo(false); // published in the room directory
    t.integer('current_state_group'); // state after the forward extremities (resolved)
    t.boolean('is_local').notNullable().defaultTo(true);
  });

  await db.schema.createTable('events', (t) => {
    t.increments('event_nid').primary();
    t.string('event_id').notNullable().unique();
    t.integer('room_nid').notNullable().references('rooms.room_nid').onDelete('CASCADE');
    // Global order /sync follows (null for outliers); backfilled events get negative positions.
    t.bigInteger('stream_ordering');
    t.bigInteger('depth').notNullable(); // topological order /messages pages through
    t.string('type').notNullable();
    t.string('state_key');
    t.string('sender').notNullable();
    t.bigInteger('origin_server_ts').notNullable();
    t.text('json').notNullable(); // the PDU without unsigned (redacted form once redacted)
    t.integer('state_group'); // state after this event
    t.boolean('outlier').notNullable().defaultTo(false);
    t.boolean('soft_failed').notNullable().defaultTo(false);
    t.string('rejected_reason');
    t.string('redacted_by'); // event id of the redaction that applied to this event
    t.string('replaces_state'); // for state events: the event this one replaced in the room state
    t.string('txn_id'); // client transaction id, shown to the sending device only
    t.string('device_id');
    t.boolean('contains_url').notNullable().defaultTo(false);
    t.unique(['stream_ordering']);
    t.index(['room_nid', 'stream_ordering']);
    t.index(['room_nid', 'depth', 'stream_ordering']);
  });

  await db.schema.createTable('state_groups', (t) => {
    t.increments('id').primary();
    t.integer('room_nid').notNullable().references('rooms.room_nid').onDelete('CASCADE');
    t.integer('prev_group'); // null: this group is a full snapshot
    t.integer('chain_length').notNullable().defaultTo(0);
  });

  await db.schema.createTable('state_group_entries', (t) => {
    t.integer('group_id').notNullable().references('state_groups.id').onDelete('CASCADE');
    t.string('type').notNullable();
    t.string('state_key').notNullable();
    t.integer('event_nid'); // null in a delta: the key was removed
    t.primary(['group_id', 'type', 'state_key']);
  });

  // The room's current state, for fast lookups (members, names, power levels).
  await db.schema.createTable('current_state', (t) => {
    t.integer('room_nid').notNullable().references('rooms.room_nid').onDelete('CASCADE');
    t.string('type').notNullable();
    t.string('state_key').notNullable();
    t.integer('event_nid').notNullable();
    t.primary(['room_nid', 'type', 'state_key']);
  });

  // Current membership per (room, user): joined rooms, member lists, who to notify.
  await db.schema.createTable('room_members', (t) => {
    t.integer('room_nid').notNullable().references('rooms.room_nid').onDelete('CASCADE');
    t.string('user_id').notNullable();
    t.string('membership').notNullable();
    t.integer('event_nid').notNullable();
    t.bigInteger('stream_ordering').notNullable();
    t.text('displayname');
    t.text('avatar_url');
    t.boolean('forgotten').notNullable().defaultTo(false);
    t.primary(['room_nid', 'user_id']);
    t.index(['user_id', 'membership']);
  });

  await db.schema.createTable('forward_extremities', (t) => {
    t.integer('room_nid').notNullable().references('rooms.room_nid').onDelete('CASCADE');
    t.integer('event_nid').notNullable();
    t.primary(['room_nid', 'event_nid']);
  });

  // Relations (m.relates_to): edits, reactions, threads, references.
  await db.schema.createTable('event_relations', (t) => {
    t.integer('event_nid').primary();
    t.integer('room_nid').notNullable();
    t.string('relates_to').notNullable(); // event id of the parent
    t.string('rel_type').notNullable();
    t.string('aggregation_key');
    t.index(['relates_to', 'rel_type']);
  });

  // Client transaction ids: PUT /send and friends are idempotent per device and txn id.
  await db.schema.createTable('event_txns', (t) => {
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.string('txn_id').notNullable();
    t.string('event_id').notNullable();
    t.bigInteger('created_ts').notNullable();
    t.primary(['user_id', 'device_id', 'txn_id']);
  });

  await db.schema.createTable('room_aliases', (t) => {
    t.string('alias').primary();
    t.string('room_id').notNullable();
    t.string('creator').notNullable();
    t.index(['room_id']);
  });
}

export async function down(db: Knex): Promise<void> {
  for (const t of ['room_aliases', 'event_txns', 'event_relations', 'forward_extremities', 'room_members', 'current_state',
    'state_group_entries', 'state_groups', 'events', 'rooms']) {
    await db.schema.dropTableIfExists(t);
  }
}
