import type { Knex } from 'knex';

// Push rules and push actions (client-server spec: "Push Notifications", "Push Rules").
export async function up(db: Knex): Promise<void> {
  // One row per user who changed anything: the ordered user-defined rules of each kind and the
  // enabled/actions overrides of server-default rules, as JSON. A user's rules are read and written
  // whole (a few KiB at most), which keeps before/after ordering a pure function (src/push/rules.ts)
  // and every change one row write at one `push_rules` stream position.
  await db.schema.createTable('push_rules', (t) => {
    t.string('user_id').primary();
    t.text('rules').notNullable(); // JSON: { [kind]: PushRule[] }, most important first
    t.text('overrides').notNullable(); // JSON: { [kind]: { [ruleId]: { enabled?, actions? } } }
    t.bigInteger('stream_id').notNullable();
    t.index(['stream_id']); // cache invalidation across processes: "who changed after position N"
  });

  // What a new event did for each local user whose rules made it notify, written in the event's
  // transaction. The event's stream ordering is allocated after this row is written, so it is read by
  // joining `events`. thread_id is the thread root for events in a thread (m.thread), null for the
  // main timeline.
  //
  // Indexes are kept to one user-first B-tree: each event adds a row per notified user, and every
  // user-first index entry lands on a different page, so a second one (user_id, event_nid) for
  // GET /notifications doubled the pages an event dirties (persist time in a 100-member room went
  // from +3 ms to +6 ms on SQLite). /notifications reads the user's prefix and sorts instead.
  await db.schema.createTable('event_push_actions', (t) => {
    t.string('user_id').notNullable();
    t.integer('event_nid').notNullable().references('events.event_nid').onDelete('CASCADE');
    t.integer('room_nid').notNullable();
    t.boolean('notify').notNullable().defaultTo(true);
    t.boolean('highlight').notNullable().defaultTo(false);
    t.string('thread_id');
    t.text('actions').notNullable(); // JSON of the matched rule's actions (for the push gateway later)
    t.bigInteger('ts').notNullable();
    t.primary(['user_id', 'room_nid', 'event_nid']);
    t.index(['event_nid']); // redactions and the events FK
  });
}

export async function down(db: Knex): Promise<void> {
  for (const t of ['event_push_actions', 'push_rules']) await db.schema.dropTableIfExists(t);
}
