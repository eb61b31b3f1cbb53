import type { Knex } from 'knex';

// End-to-end encryption (spec: "End-to-End Encryption", "Send-to-Device messaging", MSC3814).
// Key material is stored as the JSON the client signed, so what /keys/query returns verifies.
export async function up(db: Knex): Promise<void> {
  const deviceFk = (t: Knex.CreateTableBuilder) =>
    t.foreign(['user_id', 'device_id']).references(['user_id', 'device_id']).inTable('devices').onDelete('CASCADE');

  // Identity keys of a device: deleting the device deletes them.
  await db.schema.createTable('e2e_device_keys', (t) => {
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.text('key_json').notNullable();
    t.bigInteger('ts_added_ms').notNullable();
    t.primary(['user_id', 'device_id']);
    deviceFk(t);
  });

  // One-time keys, handed out in upload order (`id`) and deleted when claimed.
  await db.schema.createTable('e2e_one_time_keys', (t) => {
    t.bigIncrements('id').primary();
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.string('algorithm').notNullable();
    t.string('key_id').notNullable();
    t.text('key_json').notNullable();
    t.bigInteger('ts_added_ms').notNullable();
    t.unique(['user_id', 'device_id', 'algorithm', 'key_id']);
    t.index(['user_id', 'device_id', 'algorithm', 'id']);
    deviceFk(t);
  });

  // One fallback key per device and algorithm; `used` once claimed, kept until replaced.
  await db.schema.createTable('e2e_fallback_keys', (t) => {
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.string('algorithm').notNullable();
    t.string('key_id').notNullable();
    t.text('key_json').notNullable();
    t.boolean('used').notNullable().defaultTo(false);
    t.primary(['user_id', 'device_id', 'algorithm']);
    deviceFk(t);
  });

  // Cross-signing keys: key_type is master | self_signing | user_signing.
  await db.schema.createTable('e2e_cross_signing_keys', (t) => {
    t.string('user_id').notNullable();
    t.string('key_type').notNullable();
    t.string('public_key').notNullable();
    t.text('key_json').notNullable();
    t.bigInteger('ts_added_ms').notNullable();
    t.primary(['user_id', 'key_type']);
  });

  // Signatures uploaded through /keys/signatures/upload, merged into /keys/query answers.
  // target_key_id is a device id or a cross-signing public key.
  await db.schema.createTable('e2e_cross_signing_signatures', (t) => {
    t.string('signer_user_id').notNullable();
    t.string('signer_key_id').notNullable();
    t.string('target_user_id').notNullable();
    t.string('target_key_id').notNullable();
    t.text('signature').notNullable();
    t.primary(['signer_user_id', 'signer_key_id', 'target_user_id', 'target_key_id']);
    t.index(['target_user_id', 'target_key_id']);
  });

  // The device-list stream: one row per changed (user, device) at a `device_lists` position;
  // device_id '' marks a change of the user's cross-signing keys.
  await db.schema.createTable('device_list_changes', (t) => {
    t.bigInteger('position').notNullable();
    t.string('user_id').notNullable();
    t.string('device_id').notNullable().defaultTo('');
    t.primary(['position', 'user_id', 'device_id']);
    t.index(['user_id', 'position']);
  });

  // Pending to-device messages per recipient device, at `to_device` positions; removed once the
  // device acknowledges them by syncing past the position.
  await db.schema.createTable('device_inbox', (t) => {
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.bigInteger('position').notNullable();
    t.string('sender').notNullable();
    t.text('type').notNullable();
    t.text('content').notNullable();
    t.bigInteger('ts_added_ms').notNullable();
    t.primary(['user_id', 'device_id', 'position']);
  });

  // Transaction ids of /sendToDevice, per sending device, so retries are not delivered twice.
  await db.schema.createTable('to_device_txns', (t) => {
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.string('event_type').notNullable();
    t.string('txn_id').notNullable();
    t.bigInteger('ts_added_ms').notNullable();
    t.primary(['user_id', 'device_id', 'event_type', 'txn_id']);
    t.index(['ts_added_ms']);
  });

  // Server-side key backup versions; deleted versions are kept (flagged) so ids are never reused.
  await db.schema.createTable('e2e_room_keys_versions', (t) => {
    t.string('user_id').notNullable();
    t.bigInteger('version').notNullable();
    t.string('algorithm').notNullable();
    t.text('auth_data').notNullable();
    t.bigInteger('etag').notNullable().defaultTo(0);
    t.boolean('deleted').notNullable().defaultTo(false);
    t.primary(['user_id', 'version']);
  });

  await db.schema.createTable('e2e_room_keys', (t) => {
    t.string('user_id').notNullable();
    t.bigInteger('version').notNullable();
    t.string('room_id').notNullable();
    t.string('session_id').notNullable();
    t.integer('first_message_index').notNullable();
    t.integer('forwarded_count').notNullable();
    t.boolean('is_verified').notNullable();
    t.text('session_data').notNullable();
    t.primary(['user_id', 'version', 'room_id', 'session_id']);
  });

  // MSC3814: at most one dehydrated device per user; the device itself is a hidden row of `devices`.
  await db.schema.createTable('e2e_dehydrated_devices', (t) => {
    t.string('user_id').primary();
    t.string('device_id').notNullable();
    t.text('device_data').notNullable();
    t.bigInteger('ts_added_ms').notNullable();
  });
}

export async function down(db: Knex): Promise<void> {
  for (const t of ['e2e_dehydrated_devices', 'e2e_room_keys', 'e2e_room_keys_versions', 'to_device_txns', 'device_inbox',
    'device_list_changes', 'e2e_cross_signing_signatures', 'e2e_cross_signing_keys', 'e2e_fallback_keys',
    'e2e_one_time_keys', 'e2e_device_keys']) {
    await db.schema.dropTableIfExists(t);
  }
}
