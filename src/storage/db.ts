// One knex instance per process, for SQLite (embedded default) or PostgreSQL (production).
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { migrationSource } from '../../migrations/index.js';

export type Db = Knex;
export type Dialect = 'sqlite' | 'pg';

export function dialectOf(db: Knex): Dialect {
  return db.client.config.client === 'pg' ? 'pg' : 'sqlite';
}

export interface DbOptions { url: string; sqliteSynchronous?: 'full' | 'normal'; poolMax?: number }

export function openDatabase(opts: DbOptions): Knex {
  if (opts.url.startsWith('sqlite:')) {
    const filename = opts.url.slice('sqlite:'.length);
    if (filename !== ':memory:') mkdirSync(path.dirname(filename), { recursive: true });
    return knexFactory({
      client: 'better-sqlite3',
      connection: { filename },
      useNullAsDefault: true,
      // better-sqlite3 is synchronous: one connection serialises everything, which is what SQLite
      // wants anyway (one writer); WAL lets readers of other processes proceed.
      pool: {
        min: 1,
        max: 1,
        afterCreate(conn: { pragma(s: string): unknown; prepare(sql: string): unknown }, done: (err: Error | null, conn: unknown) => void) {
          try {
            // knex prepares every statement anew; SQLite statements are reusable, so keep them per
            // SQL text (bounded: whereIn lists of varying length make new texts).
            const prepare = conn.prepare.bind(conn);
            const statements = new Map<string, unknown>();
            conn.prepare = (sql: string) => {
              let st = statements.get(sql);
              if (!st) {
                st = prepare(sql);
                if (statements.size >= 2000) statements.clear();
                statements.set(sql, st);
              }
              return st;
            };
            conn.pragma('journal_mode = WAL');
            conn.pragma('busy_timeout = 5000');
            conn.pragma('foreign_keys = ON');
            conn.pragma(`synchronous = ${opts.sqliteSynchronous === 'normal' ? 'NORMAL' : 'FULL'}`);
            conn.pragma('cache_size = -16000');
            done(null, conn);
          } catch (err) {
            done(err as Error, conn);
          }
        },
      },
    });
  }
  return knexFactory({
    client: 'pg',
    connection: opts.url,
    pool: { min: 0, max: opts.poolMax ?? 10 },
  });
}

export async function migrate(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
  return applied;
}

/** `INSERT ... ON CONFLICT DO NOTHING` works on both dialects through knex. */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === '23505' || e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE';
}
