// Wires config → db → stores → services → http listeners. Plain `new`, in one place.
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import client from 'prom-client';
import type { Config, ListenerConfig } from './config/index.js';
import { openDatabase, migrate } from './storage/db.js';
import { createLogger } from './logger.js';
import { UsersStore } from './storage/users-store.js';
import { StreamsStore } from './storage/streams-store.js';
import { AccountDataStore } from './storage/account-data-store.js';
import { ServerKeysStore } from './storage/server-keys-store.js';
import { EventsStore } from './storage/events-store.js';
import { RoomData } from './rooms/room-data.js';
import { EventPersister } from './rooms/persist.js';
import { RoomService } from './rooms/room-service.js';
import { RoomReads } from './rooms/room-reads.js';
import { Visibility } from './rooms/visibility.js';
import { roomRoutes } from './client-api/rooms.js';
import { Accounts } from './accounts/accounts.js';
import { Uia } from './accounts/uia.js';
import { AccountData } from './accounts/account-data.js';
import { ServerKeys } from './federation/server-keys.js';
import { Notifier } from './sync/notifier.js';
import { makeAuth } from './http/auth.js';
import { RateLimiter } from './http/rate-limit.js';
import { createApp, type ApiRoutes } from './http/app.js';
import type { Services } from './services.js';
import { wellKnownRoutes, serverWellKnownRoutes } from './client-api/versions.js';
import { accountRoutes } from './client-api/account.js';
import { deviceRoutes } from './client-api/devices.js';
import { profileRoutes } from './client-api/profile.js';
import { accountDataRoutes } from './client-api/account-data.js';
import { capabilitiesRoutes } from './client-api/capabilities.js';
import { sharedSecretRegisterRoutes } from './admin/register.js';

export interface RunningListener { config: ListenerConfig; server: http.Server; port: number; url: string }

export interface Homeserver {
  services: Services;
  listeners: RunningListener[];
  stop(): Promise<void>;
}

export async function buildServices(config: Config, logger: Logger): Promise<Services> {
  const db: Knex = openDatabase({ url: config.database.url, sqliteSynchronous: config.database.sqlite_synchronous, poolMax: config.database.pool_max });
  await migrate(db);

  const stores = { users: new UsersStore(db), streams: new StreamsStore(db), accountData: new AccountDataStore(db), events: new EventsStore(db) };
  const serverKeys = new ServerKeys(new ServerKeysStore(db), config.server_name);
  await serverKeys.load(db);
  const notifier = new Notifier();
  const accounts = new Accounts(db, stores.users, config.server_name, config.registration.access_token_lifetime_ms);
  const rl = config.rate_limits;
  const roomData = new RoomData(db, stores.events);
  const persister = new EventPersister(db, roomData, stores.events, stores.streams, notifier, config.server_name, () => serverKeys.signingKey);
  const rooms = new RoomService(roomData, stores.events, stores.users, persister, config.server_name, config.rooms.default_version);
  const visibility = new Visibility(roomData, stores.events);
  const roomReads = new RoomReads(roomData, stores.events, visibility);
  return {
    config,
    db,
    logger,
    stores,
    accounts,
    uia: new Uia(stores.users, accounts),
    accountData: new AccountData(db, stores.accountData, stores.streams, notifier),
    serverKeys,
    roomData,
    persister,
    rooms,
    roomReads,
    visibility,
    notifier,
    auth: makeAuth(accounts),
    limiters: {
      login: new RateLimiter(rl.login),
      registration: new RateLimiter(rl.registration),
      messages: new RateLimiter(rl.messages),
      perIp: new RateLimiter(rl.per_ip),
    },
  };
}

export function buildRoutes(s: Services): ApiRoutes {
  const metricsRegistry = new client.Registry();
  client.collectDefaultMetrics({ register: metricsRegistry });
  return {
    client: [accountRoutes(s), deviceRoutes(s), profileRoutes(s), accountDataRoutes(s), capabilitiesRoutes(s), roomRoutes(s)],
    rooted: {
      client: [wellKnownRoutes(s)],
      federation: [serverWellKnownRoutes(s)],
      keys: [serverWellKnownRoutes(s)],
      admin: [sharedSecretRegisterRoutes(s)],
      metrics: [
        (r) => r.get('/metrics', async (ctx) => {
          ctx.type = metricsRegistry.contentType;
          ctx.body = await metricsRegistry.metrics();
        }),
      ],
    },
  };
}

export async function startHomeserver(config: Config, opts: { logger?: Logger } = {}): Promise<Homeserver> {
  const logger = opts.logger ?? createLogger(config.logging.level);
  const services = await buildServices(config, logger);
  const routes = buildRoutes(services);
  const inflight = { count: 0 };
  const listeners: RunningListener[] = [];

  for (const lc of config.listeners) {
    // One port may serve several APIs; the key endpoint goes wherever federation does.
    const apis = lc.apis.includes('federation') && !lc.apis.includes('keys') ? [...lc.apis, 'keys' as const] : lc.apis;
    const app = createApp({ apis, logger, maxBodyBytes: config.limits.max_body_bytes, trustProxy: lc.x_forwarded, routes, inflight });
    const handler = app.callback();
    const server = lc.tls
      ? https.createServer({ cert: readFileSync(lc.tls.certificate), key: readFileSync(lc.tls.key) }, handler)
      : http.createServer(handler);
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(lc.port, lc.address, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const port = (server.address() as AddressInfo).port;
    const host = lc.address.includes(':') ? `[${lc.address}]` : lc.address;
    listeners.push({ config: lc, server, port, url: `${lc.tls ? 'https' : 'http'}://${host}:${port}` });
    logger.info({ address: lc.address, port, apis, tls: !!lc.tls }, 'listening');
  }

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      // Stop accepting, let in-flight requests finish (bounded), then close the database.
      await Promise.all(listeners.map((l) => new Promise<void>((resolve) => {
        l.server.close(() => resolve());
        l.server.closeIdleConnections();
      })).concat([waitForIdle(inflight, 10_000).then(() => listeners.forEach((l) => l.server.closeAllConnections()))]));
      await services.db.destroy();
      logger.info('stopped');
    })();
    return stopping;
  };
  return { services, listeners, stop };
}

async function waitForIdle(inflight: { count: number }, maxMs: number): Promise<void> {
  const until = Date.now() + maxMs;
  while (inflight.count > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
}
