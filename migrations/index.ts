// One migration set for SQLite and PostgreSQL, loaded statically so it works from TypeScript
// sources (tests) and from the compiled build alike.
import type { Knex } from 'knex';
import * as m0001 from './0001_accounts.js';
import * as m0002 from './0002_rooms.js';
import * as m0003 from './0003_e2ee.js';
import * as m0004 from './0004_rooms_extra.js';
import * as m0005 from './0005_push.js';
import * as m0006 from './0006_sync.js';
import * as m0007FederationKeys from './0007_federation_keys.js';
import * as m0008FederationOutbox from './0008_federation_outbox.js';
import * as m0009 from './0009_federation_rx.js';
import * as m0010FederationEdus from './0010_federation_edus.js';
import * as m0011Openid from './0011_openid.js';

interface Migration { up(db: Knex): Promise<void>; down(db: Knex): Promise<void> }

const migrations: Record<string, Migration> = {
  '0009_federation_rx': m0009,
  '0006_sync': m0006,
  '0001_accounts': m0001,
  '0002_rooms': m0002,
  '0003_e2ee': m0003,
  '0004_rooms_extra': m0004,
  '0005_push': m0005,
  '0007_federation_keys': m0007FederationKeys,
  '0008_federation_outbox': m0008FederationOutbox,
  '0010_federation_edus': m0010FederationEdus,
  '0011_openid': m0011Openid,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations).sort(),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name],
};
