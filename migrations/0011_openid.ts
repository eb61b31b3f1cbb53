import type { Knex } from 'knex';

// OpenID tokens (client-server API "OpenID", server-server API "OpenID"): a user hands one to a
// third party, which exchanges it at /_matrix/federation/v1/openid/userinfo for the user's ID.
// Only the SHA-256 of each token is stored, as for access tokens.
export async function up(db: Knex): Promise<void> {
  await db.schema.createTable('openid_tokens', (t) => {
    t.string('token_hash', 64).primary();
    t.string('user_id').notNullable().references('users.user_id').onDelete('CASCADE');
    t.bigInteger('expires_ts').notNullable();
    t.index(['expires_ts']);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTableIfExists('openid_tokens');
}
