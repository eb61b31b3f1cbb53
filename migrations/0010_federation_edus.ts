import type { Knex } from 'knex';

// Federation EDUs (server-server API "Device Management", "Send-to-device messaging").
export async function up(db: Knex): Promise<void> {
  // Our side of each local user's m.device_list_update sequence: the last stream_id sent. Every
  // EDU takes the next one and names the previous one in prev_id; /user/devices reports it.
  await db.schema.createTable('device_list_outbound', (t) => {
    t.string('user_id').primary();
    t.bigInteger('stream_id').notNullable();
  });

  // Remote users whose device lists we track (they share a room with a local user): the last
  // stream_id applied, their cross-signing keys, and `stale` when an update was lost and a resync
  // failed (queries then go to their server until a resync succeeds).
  await db.schema.createTable('remote_device_lists', (t) => {
    t.string('user_id').primary();
    t.bigInteger('stream_id').notNullable().defaultTo(0);
    t.text('master_key');
    t.text('self_signing_key');
    t.boolean('stale').notNullable().defaultTo(false);
    t.bigInteger('updated_ts').notNullable();
  });
  await db.schema.createTable('remote_devices', (t) => {
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.text('keys'); // device keys JSON, null when the device has none
    t.primary(['user_id', 'device_id']);
  });

  // m.direct_to_device message ids already delivered, per origin (spec: message_id is for idempotence).
  await db.schema.createTable('federation_to_device_seen', (t) => {
    t.string('origin').notNullable();
    t.string('message_id').notNullable();
    t.bigInteger('received_ts').notNullable();
    t.primary(['origin', 'message_id']);
    t.index(['received_ts']);
  });
}

export async function down(db: Knex): Promise<void> {
  for (const t of ['federation_to_device_seen', 'remote_devices', 'remote_device_lists', 'device_list_outbound']) await db.schema.dropTableIfExists(t);
}
