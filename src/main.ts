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
import { RoomDirectory } from './rooms/room-directory.js';
import { RoomUpgrades } from './rooms/room-upgrade.js';
import { directoryRoutes, roomSummaryUnstableRoutes } from './client-api/directory.js';
import { SyncStore } from './storage/sync-store.js';
import { SyncWaiter } from './sync/waiter.js';
import { SyncService } from './sync/sync-service.js';
import { Ephemeral } from './sync/ephemeral.js';
import { syncRoutes } from './client-api/sync.js';
import { jobQueuePrefix } from './jobs/index.js';
import { Accounts } from './accounts/accounts.js';
import { Uia } from './accounts/uia.js';
import { AccountData } from './accounts/account-data.js';
import { ServerKeys } from './federation/server-keys.js';
import { KeyRing } from './federation/keyring.js';
import { FederationClient } from './federation/client.js';
import { federationTransportRoutes, keyQueryRoutes } from './federation/routes/transport.js';
import { ReceivedEvents } from './rooms/received.js';
import { FederationReceiver } from './federation/receiver.js';
import { FederatedMembership } from './federation/membership.js';
import { federationRoomRoutes } from './federation/routes/rooms.js';
import { federationKeyRoutes } from './federation/routes/keys.js';
import { federationQueryRoutes } from './federation/routes/queries.js';
import { FederationQueries } from './federation/queries.js';
import { SpaceHierarchy } from './rooms/space-hierarchy.js';
import { spaceRoutes } from './client-api/spaces.js';
import { openIdRoutes } from './client-api/openid.js';
import { FederationEdus } from './federation/edus.js';
import { RemoteDeviceLists } from './federation/remote-devices.js';
import { FederationEdusStore } from './storage/federation-edus-store.js';
import { requireServerAuth } from './federation/x-matrix.js';
import { FederationKeysStore } from './storage/federation-keys-store.js';
import { FederationSender, FederationClientTransport, type FederationSenderOptions, type TransactionTransport } from './federation/sender.js';
import { OutboxStore } from './storage/outbox-store.js';
import { createJobQueue } from './jobs/index.js';
import { registerProcessors } from './jobs/processors.js';
import { Notifier, type NotifierBus } from './sync/notifier.js';
import { makeAuth } from './http/auth.js';
import { RateLimiter, rateLimit } from './http/rate-limit.js';
import { createApp, type ApiRoutes } from './http/app.js';
import type { Services } from './services.js';
import { wellKnownRoutes, serverWellKnownRoutes } from './client-api/versions.js';
import { accountRoutes } from './client-api/account.js';
import { deviceRoutes } from './client-api/devices.js';
import { profileRoutes } from './client-api/profile.js';
import { accountDataRoutes } from './client-api/account-data.js';
import { capabilitiesRoutes } from './client-api/capabilities.js';
import { sharedSecretRegisterRoutes } from './admin/register.js';
import { E2ee } from './e2ee/index.js';
import { keyRoutes } from './client-api/keys.js';
import { dehydratedDeviceRoutes } from './client-api/keys-dehydrated.js';
import { roomKeyRoutes } from './client-api/room-keys.js';
import { toDeviceRoutes } from './client-api/to-device.js';
import { PushStore } from './storage/push-store.js';
import { PushRulesService } from './push/push-rules-service.js';
import { PushNotifications, readUpToFromReceipts } from './push/push-notifications.js';
import { BulkPushEvaluator } from './push/bulk-evaluator.js';
import { pushRulesRoutes } from './client-api/push-rules.js';
import { notificationsRoutes } from './client-api/notifications.js';

export interface RunningListener { config: ListenerConfig; server: http.Server; port: number; url: string }

export interface Homeserver {
  services: Services;
  listeners: RunningListener[];
  stop(): Promise<void>;
}

/** Seams for tests and embedders; production passes none. */
export interface BuildOptions {
  /** Delivers federation transactions (default: through the FederationClient). */
  federationTransport?: TransactionTransport;
  federationSender?: Partial<FederationSenderOptions>;
}

export async function buildServices(config: Config, logger: Logger, opts: BuildOptions = {}): Promise<Services> {
  const db: Knex = openDatabase({ url: config.database.url, sqliteSynchronous: config.database.sqlite_synchronous, poolMax: config.database.pool_max });
  await migrate(db);

  const stores = { users: new UsersStore(db), streams: new StreamsStore(db), accountData: new AccountDataStore(db), events: new EventsStore(db) };
  const serverKeys = new ServerKeys(new ServerKeysStore(db), config.server_name);
  await serverKeys.load(db);
  // Federation transport: signed outgoing requests, and other servers' keys (direct or via notaries).
  const fed = config.federation;
  const federationClient = new FederationClient({
    serverName: config.server_name,
    signingKey: () => serverKeys.signingKey,
    serverNameMap: fed.server_name_map,
    allowPrivateAddresses: fed.allow_private_addresses,
    caFile: fed.ca_file,
    logger,
  });
  const keyRing = new KeyRing({ store: new FederationKeysStore(db), ownKeys: serverKeys, transport: federationClient, trustedKeyServers: fed.trusted_key_servers, logger });
  const notifier = new Notifier();
  let bus: NotifierBus | null = null;
  if (config.redis.url) {
    const { RedisBus } = await import('./sync/redis-bus.js');
    bus = await RedisBus.connect(config.redis.url, jobQueuePrefix(config), logger);
    notifier.attachBus(bus);
  }
  const accounts = new Accounts(db, stores.users, config.server_name, config.registration.access_token_lifetime_ms);
  const e2ee = new E2ee(db, stores.users, stores.streams, notifier, config.server_name, logger);
  e2ee.attachTo(accounts);
  const rl = config.rate_limits;
  const roomData = new RoomData(db, stores.events);
  const persister = new EventPersister(db, roomData, stores.events, stores.streams, notifier, config.server_name, () => serverKeys.signingKey);
  const rooms = new RoomService(roomData, stores.events, stores.users, persister, config.server_name, config.rooms.default_version);
  const visibility = new Visibility(roomData, stores.events);
  const roomReads = new RoomReads(roomData, stores.events, visibility);
  const pushStore = new PushStore(db);
  const pushRules = new PushRulesService(db, pushStore, stores.streams, notifier, {}, logger);
  const pushNotifications = new PushNotifications(db, pushStore, roomData);
  persister.hooks.push(new BulkPushEvaluator(roomData, stores.events, pushStore, pushRules, config.server_name, logger));
  const jobs = await createJobQueue(config, logger);
  // Outgoing federation: outbox rows written in each event's transaction, drained by federation-send jobs.
  const federationSender = config.federation.enabled
    ? new FederationSender(db, new OutboxStore(db), jobs, opts.federationTransport ?? new FederationClientTransport(federationClient), config.server_name, logger, opts.federationSender)
    : null;
  if (federationSender) {
    persister.hooks.push(federationSender);
    // Inside the event's transaction: on a cache miss the read must use that transaction's connection.
    federationSender.cachedJoinedServers = async (room, trx) =>
      [...new Set((await roomData.joinedMembers(room, trx)).map((m) => m.user_id.slice(m.user_id.indexOf(':') + 1)))];
  }
  // Incoming federation: PDU checks, gap filling, joins/invites/leaves as either side.
  const received = new ReceivedEvents(db, roomData, stores.events, stores.streams, notifier, persister);
  const federationReceiver = new FederationReceiver(db, roomData, stores.events, received, keyRing, federationClient, config.server_name, logger);
  const federatedMembership = new FederatedMembership(roomData, stores.events, persister, received, federationReceiver, federationClient, keyRing, config.server_name, () => serverKeys.signingKey, logger);
  if (config.federation.enabled) {
    roomReads.backfill = (room, limit) => federationReceiver.backfill(room, limit);
    rooms.federation = {
      joinRemote: (userId, roomId, servers, content) => federatedMembership.joinRemote(userId, roomId, servers, content),
      signInvite: (room, invite, stripped) => federatedMembership.signInviteRemotely(room, invite, stripped),
      leaveRemote: (userId, room, server) => federatedMembership.leaveRemote(userId, room, server),
      queryAlias: (alias) => federationClient.request(alias.slice(alias.indexOf(':') + 1), 'GET', '/_matrix/federation/v1/query/directory', { query: { room_alias: alias } }),
    };
  }
  const directory = new RoomDirectory(roomData, stores.events, rooms, persister, visibility, config.server_name);
  const hierarchy = new SpaceHierarchy(roomData, stores.events, directory, config.server_name);
  // Other servers' directories and space hierarchies, asked for local clients.
  const federationQueries = config.federation.enabled ? new FederationQueries(federationClient) : null;
  if (federationQueries) {
    directory.remotePublicRooms = (server, q) => federationQueries.publicRooms(server, q);
    hierarchy.remote = (server, roomId, suggestedOnly) => federationQueries.hierarchy(server, roomId, suggestedOnly);
  }
  const upgrades = new RoomUpgrades(roomData, stores.events, rooms, persister, directory, config.server_name);
  // Deactivation leaves every room and rejects pending invites (after other hooks, e.g. E2EE's).
  const prevDeactivating = accounts.hooks.deactivating;
  accounts.hooks.deactivating = async (userId, erase) => {
    await prevDeactivating?.(userId, erase);
    await rooms.leaveAllRooms(userId);
  };
  const accountData = new AccountData(db, stores.accountData, stores.streams, notifier);
  const syncStore = new SyncStore(db);
  pushNotifications.readUpToLookup = async (userId, roomNids) => readUpToFromReceipts(await syncStore.receiptsOfUser(userId, roomNids));
  const syncWaiter = new SyncWaiter(notifier, await stores.streams.currentPositions(db));
  pushRules.knownPosition = () => syncWaiter.current.push_rules;
  const syncService = new SyncService(roomData, stores.events, syncStore, stores.accountData, roomReads, visibility, syncWaiter);
  const ephemeral = new Ephemeral(db, syncStore, stores.streams, stores.events, roomData, notifier, accountData, config.presence.enabled, logger);
  syncService.ext.presenceEnabled = config.presence.enabled;
  roomReads.ignoredUsers = (userId) => syncService.ignoredUsers(userId);
  // Another process redacted an event: drop our cached copy.
  notifier.subscribe((c) => {
    if (c.invalidateEvents) roomData.forget(c.invalidateEvents);
    // A membership change (its notification names the member): drop the rooms' cached member lists.
    if (c.stream === 'events' && c.userIds && c.roomIds) {
      for (const roomId of c.roomIds) roomData.membershipChanged(roomId);
    }
  });
  syncService.ext.onSync = (userId, setPresence) => ephemeral.onSync(userId, setPresence);
  // EDUs: typing, receipts, presence, device lists and to-device messages to and from other
  // servers; remote users' keys for /keys/query and /keys/claim.
  const federationEdusStore = new FederationEdusStore(db);
  let remoteDevices: RemoteDeviceLists | null = null;
  if (federationSender) {
    remoteDevices = new RemoteDeviceLists({
      db, store: federationEdusStore, client: federationClient, deviceLists: e2ee.deviceLists, serverName: config.server_name, logger,
      joinedMembers: async (roomNid) => (await stores.events.members(roomNid, ['join'])).map((m) => m.user_id),
    });
    const rd = remoteDevices;
    persister.hooks.push({
      afterCommit: (ev, room) => {
        const m = ev.pdu.type === 'm.room.member' ? ev.pdu.content?.membership : undefined;
        if ((m === 'leave' || m === 'ban') && typeof ev.pdu.state_key === 'string') {
          void rd.afterLeave(room.nid, ev.pdu.state_key).catch((err: Error) => logger.warn({ err: err.message }, 'device list tracking update failed'));
        }
      },
    });
    new FederationEdus({
      db, store: federationEdusStore, queue: federationSender, data: roomData, ephemeral, e2ee, remoteDevices,
      serverName: config.server_name, presenceEnabled: config.presence.enabled, logger,
    }).install(federationReceiver.eduHandlers);
  }
  // E2EE: to-device messages (deleted once acknowledged), device list changes, key counts.
  syncService.ext.toDevice = (u, d, since, upTo, limit) => e2ee.toDeviceMessages(u, d, since, upTo, limit);
  syncService.ext.ackToDevice = async (u, d, pos) => { await e2ee.deleteToDeviceUpTo(u, d, pos); };
  syncService.ext.deviceListChanges = (since, upTo) => e2ee.deviceListChanges(since, upTo);
  syncService.ext.oneTimeKeyCounts = (u, d) => e2ee.oneTimeKeyCounts(u, d);
  syncService.ext.unusedFallbackKeyTypes = (u, d) => e2ee.unusedFallbackKeyTypes(u, d);
  // Push: unread counts (total for unread_notifications; `main` is the main-timeline count thread-aware
  // clients want), m.push_rules account data.
  syncService.ext.unreadCounts = async (userId, roomNid, readUpTo) => {
    const c = await pushNotifications.unreadCounts(userId, roomNid, readUpTo);
    return { ...c.total, threads: c.threads, main: c.main };
  };
  syncService.ext.pushRulesChanged = (userId, since, upTo) => pushRules.pushRulesChangedSince(userId, since, upTo);
  syncService.ext.pushRules = (userId) => pushRules.rulesetFor(userId);
  return {
    config,
    db,
    logger,
    stores,
    accounts,
    uia: new Uia(stores.users, accounts),
    accountData,
    syncStore,
    syncWaiter,
    syncService,
    ephemeral,
    bus,
    serverKeys,
    keyRing,
    federationClient,
    roomData,
    persister,
    rooms,
    roomReads,
    visibility,
    directory,
    upgrades,
    hierarchy,
    federationQueries,
    notifier,
    e2ee,
    pushRules,
    pushNotifications,
    jobs,
    federationSender,
    federationEdusStore,
    remoteDevices,
    federationReceiver,
    federatedMembership,
    received,
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
    client: [
      // Every client request counts against its IP's bucket (login/registration have their own, stricter ones).
      (r) => r.use(rateLimit(s.limiters.perIp, { enabled: s.config.rate_limits.enabled, exempt: new Set(), byIp: true })),
      pushRulesRoutes(s), notificationsRoutes(s), keyRoutes(s), roomKeyRoutes(s), toDeviceRoutes(s), accountRoutes(s), deviceRoutes(s), profileRoutes(s, { profileChanged: (userId) => s.rooms.propagateProfile(userId) }), accountDataRoutes(s, { canAccessRoom: (userId, roomId) => s.rooms.hasMembership(userId, roomId) }), capabilitiesRoutes(s), roomRoutes(s), directoryRoutes(s), spaceRoutes(s), openIdRoutes(s), syncRoutes(s)],
    rooted: {
      client: [wellKnownRoutes(s), dehydratedDeviceRoutes(s), roomSummaryUnstableRoutes(s)],
      federation: [serverWellKnownRoutes(s), federationTransportRoutes(s), federationRoomRoutes({
        serverName: s.config.server_name,
        auth: requireServerAuth(s.keyRing, s.config.server_name),
        data: s.roomData,
        store: s.stores.events,
        users: s.stores.users,
        receiver: s.federationReceiver,
        membership: s.federatedMembership,
        broadcast: async (ev, room, except) => s.federationSender?.relayEvent(ev, room, [except]),
        onTransactionFrom: (origin) => void s.federationSender?.markDestinationUp(origin),
      }), federationQueryRoutes({
        serverName: s.config.server_name,
        auth: requireServerAuth(s.keyRing, s.config.server_name),
        data: s.roomData,
        directory: s.directory,
        hierarchy: s.hierarchy,
        accounts: s.accounts,
      }), federationKeyRoutes({
        serverName: s.config.server_name,
        auth: requireServerAuth(s.keyRing, s.config.server_name),
        keys: s.e2ee.keys,
        store: s.federationEdusStore,
      })],
      keys: [serverWellKnownRoutes(s), keyQueryRoutes(s)],
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

export async function startHomeserver(config: Config, opts: { logger?: Logger } & BuildOptions = {}): Promise<Homeserver> {
  const logger = opts.logger ?? createLogger(config.logging.level);
  const services = await buildServices(config, logger, opts);
  const routes = buildRoutes(services);
  const inflight = { count: 0 };
  const listeners: RunningListener[] = [];
  services.ephemeral.start();
  registerProcessors(services.jobs, services);
  services.federationSender?.start();

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
      // Stop accepting, answer parked long-polls, let in-flight requests finish (bounded), then
      // close the database.
      services.ephemeral.stop();
      services.syncWaiter.close();
      await Promise.all(listeners.map((l) => new Promise<void>((resolve) => {
        l.server.close(() => resolve());
        l.server.closeIdleConnections();
      })).concat([waitForIdle(inflight, 10_000).then(() => listeners.forEach((l) => l.server.closeAllConnections()))]));
      services.federationSender?.stop();
      await services.jobs.close();
      await services.federationClient.close();
      // Queued remote device-list work finishes quickly once the client is closed (bounded anyway).
      await Promise.race([services.remoteDevices?.idle(), new Promise((r) => setTimeout(r, 5000).unref())]);
      await services.bus?.close();
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
