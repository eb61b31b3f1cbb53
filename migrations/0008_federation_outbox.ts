import type { Knex } from 'knex';

// The federation outbox: what each destination server still has to receive, written in the same
// transaction as the event (or EDU) that caused it, and the per-destination delivery state.
export async function up(db: Knex): Promise<void> {
  // PDUs by reference: the event's JSON is read when the transaction is built.
  await db.schema.createTable('federation_outbox_pdus', (t) => {
    t.increments('id').primary(); // delivery order within a destination
    t.string('destination').notNullable();
    t.integer('event_nid').notNullable().references('events.event_nid').onDelete('CASCADE');
    t.bigInteger('created_ts').notNullable();
    t.unique(['destination', 'event_nid']);
    t.index(['destination', 'id']);
  });

  // EDUs by value. A dedupe key (unique per destination; NULLs never collide) lets a newer EDU
  // replace a queued older one, e.g. a typing update for the same room.
  await db.schema.createTable('federation_outbox_edus', (t) => {
    t.increments('id').primary();
    t.string('destination').notNullable();
    t.string('edu_type').notNullable();
    t.text('content').notNullable(); // JSON
    t.string('dedupe_key');
    t.bigInteger('created_ts').notNullable();
    t.unique(['destination', 'dedupe_key']);
    t.index(['destination', 'id']);
  });

  await db.schema.createTable('federation_destinations', (t) => {
    t.string('destination').primary();
    t.integer('retry_count').notNullable().defaultTo(0);
    t.bigInteger('next_attempt_ts').notNullable().defaultTo(0); // backoff: no attempt before this
    t.bigInteger('last_success_ts');
    t.bigInteger('last_failure_ts');
    t.text('last_error');
    // Lease: the process sending to this destination, and until when (one transaction in flight).
    t.string('lease_owner');
    t.bigInteger('sending_until').notNullable().defaultTo(0);
    // The transaction being delivered. The spec has a sender retry the same transaction until it is
    // answered with 200, so a failed one is kept as sent and sent again with the same txn id.
    t.string('txn_id');
    t.text('txn_body'); // JSON body as first sent
    t.text('txn_pdu_ids'); // JSON arrays of outbox row ids it covers
    t.text('txn_edu_ids');
  });
}

export async function down(db: Knex): Promise<void> {
  for (const t of ['federation_destinations', 'federation_outbox_edus', 'federation_outbox_pdus']) await db.schema.dropTableIfExists(t);
}
