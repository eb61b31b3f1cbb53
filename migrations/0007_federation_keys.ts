import type { Knex } from 'knex';

// Other servers' signing keys (spec "Retrieving server keys"), fetched directly or through notaries.
export async function up(db: Knex): Promise<void> {
  // One row per (server, key id). A key is usable until `expired_ts` when the server lists it under
  // old_verify_keys, else until `valid_until_ts` (the greatest seen, already capped at 7 days after
  // the response was fetched).
  await db.schema.createTable('remote_server_keys', (t) => {
    t.string('server_name').notNullable();
    t.string('key_id').notNullable();
    t.string('key').notNullable(); // unpadded base64 Ed25519 public key
    t.bigInteger('valid_until_ts').notNullable();
    t.bigInteger('expired_ts');
    t.bigInteger('fetched_ts').notNullable();
    t.primary(['server_name', 'key_id']);
  });

  // The latest self-signed key response of each server, with only the origin's signatures, which we
  // serve (countersigned) as a notary from /_matrix/key/v2/query.
  await db.schema.createTable('remote_server_key_json', (t) => {
    t.string('server_name').primary();
    t.bigInteger('valid_until_ts').notNullable();
    t.bigInteger('fetched_ts').notNullable();
    t.text('key_json').notNullable();
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTableIfExists('remote_server_key_json');
  await db.schema.dropTableIfExists('remote_server_keys');
}
