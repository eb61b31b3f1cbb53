import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // Positions of the streams /sync follows. Each allocation is `UPDATE ... RETURNING` as the last
  // statement of the writing transaction, so the row lock orders commits and no reader can observe a
  // position before every lower one has committed.
  await db.schema.createTable('stream_positions', (t) => {
    t.string('stream').primary();
    t.bigInteger('position').notNullable().defaultTo(0);
  });
  await db('stream_positions').insert(
    ['events', 'account_data', 'receipts', 'to_device', 'presence', 'device_lists', 'push_rules', 'typing', 'invites'].map(
      (stream) => ({ stream, position: 0 }),
    ),
  );

  await db.schema.createTable('server_signing_keys', (t) => {
    t.string('key_id').primary();
    t.text('seed').notNullable(); // unpadded base64 of the 32-byte Ed25519 seed
    t.bigInteger('created_ts').notNullable();
    t.bigInteger('expired_ts'); // set when the key is retired; then served as an old_verify_key
  });

  await db.schema.createTable('users', (t) => {
    t.string('user_id').primary();
    t.string('localpart').notNullable().unique();
    t.text('password_hash');
    t.boolean('is_admin').notNullable().defaultTo(false);
    t.boolean('is_guest').notNullable().defaultTo(false);
    t.boolean('deactivated').notNullable().defaultTo(false);
    t.bigInteger('created_ts').notNullable();
    t.text('displayname');
    t.text('avatar_url');
    t.text('profile_fields'); // JSON of custom profile fields (spec v1.16)
  });

  await db.schema.createTable('devices', (t) => {
    t.string('user_id').notNullable().references('users.user_id').onDelete('CASCADE');
    t.string('device_id').notNullable();
    t.text('display_name');
    t.string('last_seen_ip');
    t.text('last_seen_user_agent');
    t.bigInteger('last_seen_ts');
    t.bigInteger('created_ts').notNullable();
    t.boolean('hidden').notNullable().defaultTo(false);
    t.primary(['user_id', 'device_id']);
  });

  await db.schema.createTable('refresh_tokens', (t) => {
    t.increments('id').primary();
    t.string('token_hash', 64).notNullable().unique();
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.integer('next_token_id');
    t.bigInteger('created_ts').notNullable();
    t.foreign(['user_id', 'device_id']).references(['user_id', 'device_id']).inTable('devices').onDelete('CASCADE');
  });

  await db.schema.createTable('access_tokens', (t) => {
    t.increments('id').primary();
    t.string('token_hash', 64).notNullable().unique(); // SHA-256 hex; the token itself is never stored
    t.string('user_id').notNullable();
    t.string('device_id').notNullable();
    t.bigInteger('created_ts').notNullable();
    t.bigInteger('expires_ts');
    t.integer('refresh_token_id').references('refresh_tokens.id').onDelete('CASCADE');
    t.foreign(['user_id', 'device_id']).references(['user_id', 'device_id']).inTable('devices').onDelete('CASCADE');
    t.index(['user_id', 'device_id']);
  });

  await db.schema.createTable('login_tokens', (t) => {
    t.string('token_hash', 64).primary();
    t.string('user_id').notNullable().references('users.user_id').onDelete('CASCADE');
    t.bigInteger('expires_ts').notNullable();
  });

  await db.schema.createTable('registration_tokens', (t) => {
    t.string('token').primary();
    t.integer('uses_allowed'); // null: unlimited
    t.integer('pending').notNullable().defaultTo(0);
    t.integer('completed').notNullable().defaultTo(0);
    t.bigInteger('expiry_time');
  });

  await db.schema.createTable('uia_sessions', (t) => {
    t.string('session_id').primary();
    t.string('user_id'); // the authenticated user, when the operation needs one
    t.text('uri').notNullable();
    t.text('completed').notNullable().defaultTo('[]'); // JSON list of completed stages
    t.text('data').notNullable().defaultTo('{}'); // JSON: stage results (e.g. the registration token used)
    t.bigInteger('created_ts').notNullable();
  });

  await db.schema.createTable('shared_secret_nonces', (t) => {
    t.string('nonce').primary();
    t.bigInteger('created_ts').notNullable();
  });

  await db.schema.createTable('account_data', (t) => {
    t.string('user_id').notNullable();
    t.string('room_id').notNullable().defaultTo(''); // '' for global account data
    t.string('type').notNullable();
    t.text('content').notNullable();
    t.bigInteger('stream_id').notNullable();
    t.primary(['user_id', 'room_id', 'type']);
    t.index(['user_id', 'stream_id']);
  });
}

export async function down(db: Knex): Promise<void> {
  for (const t of ['account_data', 'shared_secret_nonces', 'uia_sessions', 'registration_tokens', 'login_tokens',
    'access_tokens', 'refresh_tokens', 'devices', 'users', 'server_signing_keys', 'stream_positions']) {
    await db.schema.dropTableIfExists(t);
  }
}
