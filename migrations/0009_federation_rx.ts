import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  // Responses to transactions received, so a retried PUT /send/{txnId} is answered, not re-applied.
  await db.schema.createTable('federation_txns', (t) => {
    t.string('origin').notNullable();
    t.string('txn_id').notNullable();
    t.text('response').notNullable();
    t.bigInteger('received_ts').notNullable();
    t.primary(['origin', 'txn_id']);
  });
  // Stripped state sent with an invite to a room this server is not in (for /sync invite_state).
  await db.schema.createTable('remote_invites', (t) => {
    t.integer('room_nid').notNullable();
    t.string('user_id').notNullable();
    t.string('event_id').notNullable();
    t.text('invite_state').notNullable();
    t.primary(['room_nid', 'user_id']);
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTableIfExists('remote_invites');
  await db.schema.dropTableIfExists('federation_txns');
}
