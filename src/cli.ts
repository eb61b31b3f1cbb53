#!/usr/bin/env node
// Command line: start | migrate | register-user | create-registration-token | generate-config
import { existsSync, writeFileSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, ConfigError } from './config/index.js';
import { openDatabase, migrate } from './storage/db.js';
import { startHomeserver, buildServices } from './main.js';
import { createLogger } from './logger.js';

const USAGE = `usage: lattice <command> [options]

commands:
  start                         run the homeserver
  migrate                       apply database migrations and exit
  register-user <localpart>     create a user (--password P, --admin)
  create-registration-token     create a registration token (--uses N, --expires-in-days D, --token T)
  generate-config [file]        write a documented config file (default homeserver.yaml)

options:
  -c, --config FILE             config file (default: $LATTICE_CONFIG, else ./homeserver.yaml if present)
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      password: { type: 'string', short: 'p' },
      admin: { type: 'boolean', default: false },
      uses: { type: 'string' },
      'expires-in-days': { type: 'string' },
      token: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  if (!command || values.help) {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const configFile = values.config;

  if (command === 'generate-config') {
    const target = rest[0] ?? 'homeserver.yaml';
    if (existsSync(target)) {
      process.stderr.write(`${target} exists; not overwriting\n`);
      return 1;
    }
    const here = path.dirname(fileURLToPath(import.meta.url));
    const example = [path.resolve(here, '../config.example.yaml'), path.resolve(here, '../../config.example.yaml')].find(existsSync);
    if (!example) throw new Error('config.example.yaml not found');
    writeFileSync(target, readFileSync(example, 'utf8'));
    process.stdout.write(`wrote ${target}\n`);
    return 0;
  }

  const config = loadConfig({ file: configFile });
  const logger = createLogger(config.logging.level);

  switch (command) {
    case 'start': {
      const hs = await startHomeserver(config, { logger });
      const stop = (signal: string) => {
        logger.info({ signal }, 'shutting down');
        hs.stop().then(() => process.exit(0), (err) => {
          logger.error({ err }, 'error during shutdown');
          process.exit(1);
        });
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      return -1; // keep running
    }
    case 'migrate': {
      const db = openDatabase({ url: config.database.url });
      const applied = await migrate(db);
      await db.destroy();
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
      return 0;
    }
    case 'register-user': {
      const localpart = rest[0];
      if (!localpart || !values.password) {
        process.stderr.write('usage: lattice register-user <localpart> --password P [--admin]\n');
        return 2;
      }
      const s = await buildServices(config, createLogger('warn'));
      try {
        const userId = await s.accounts.register({ localpart, password: values.password, admin: values.admin });
        process.stdout.write(`${userId}\n`);
      } finally {
        await s.db.destroy();
      }
      return 0;
    }
    case 'create-registration-token': {
      const s = await buildServices(config, createLogger('warn'));
      try {
        const days = values['expires-in-days'] ? Number(values['expires-in-days']) : null;
        const token = await s.accounts.createRegistrationToken({
          token: values.token,
          usesAllowed: values.uses ? Number(values.uses) : null,
          expiryTime: days ? Date.now() + days * 86400_000 : null,
        });
        process.stdout.write(`${token}\n`);
      } finally {
        await s.db.destroy();
      }
      return 0;
    }
    default:
      process.stderr.write(`unknown command ${command}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else process.stderr.write(`${(err as Error)?.stack ?? err}\n`);
    process.exit(1);
  },
);
