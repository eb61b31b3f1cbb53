// One migration set for SQLite and PostgreSQL, loaded statically so it works from TypeScript
// sources (tests) and from the compiled build alike.
import type { Knex } from 'knex';
import * as m0001 from './0001_accounts.js';

interface Migration { up(db: Knex): Promise<void>; down(db: Knex): Promise<void> }

const migrations: Record<string, Migration> = {
  '0001_accounts': m0001,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations).sort(),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name],
};
