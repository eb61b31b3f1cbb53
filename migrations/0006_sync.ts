import type { Knex } from 'knex';

// Filters, receipts, typing and presence: per-user and ephemeral data /sync carries.
export async function up(db: Knex): Promise<void> {
  await db.schema.createTable('filters', (t) => {
    t.increments('filter_id').primary();
    t.string('user_id').notNullable();
    t.text('json').notNullable();
    t.index(['user_id']);
  });

  // The latest receipt per (room, user, type, thread); '' is the unthreaded receipt.
  await db.schema.createTable('receipts', (t) => {
    t.integer('room_nid').notNullable();
    t.string('user_id').notNullable();
    t.string('receipt_type').notNullable();
    t.string('thread_id').notNullable().defaultTo('');
    t.string('event_id').notNullable();
    t.bigInteger('event_stream').notNullable(); // stream ordering of the receipted event
    t.bigInteger('ts').notNullable();
    t.bigInteger('stream_id').notNullable();
    t.primary(['room_nid', 'user_id', 'receipt_type', 'thread_id']);
    t.index(['stream_id']);
  });

  // Typing users with their expiry; a row per (room, user). Shared by every process.
  await db.schema.createTable('typing', (t) => {
    t.integer('room_nid').notNullable();
    t.string('user_id').notNullable();
    t.bigInteger('expires_ts').notNullable();
    t.primary(['room_nid', 'user_id']);
  });
  // The last typing change per room, so a sync knows which rooms' typing lists to send.
  await db.schema.createTable('typing_rooms', (t) => {
    t.integer('room_nid').primary();
    t.bigInteger('stream_id').notNullable();
  });

  await db.schema.createTable('presence', (t) => {
    t.string('user_id').primary();
    t.string('state').notNullable(); // online | unavailable | offline | busy
    t.text('status_msg');
    t.bigInteger('last_active_ts').notNullable();
    t.bigInteger('last_sync_ts').notNullable().defaultTo(0);
    t.boolean('currently_active').notNullable().defaultTo(false);
    t.bigInteger('stream_id').notNullable();
    t.index(['stream_id']);
  });
}

export async function down(db: Knex): Promise<void> {
  for (const t of ['presence', 'typing_rooms', 'typing', 'receipts', 'filters']) await db.schema.dropTableIfExists(t);
}
