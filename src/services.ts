// The object graph main.ts builds once: handlers receive it and use the services they need.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Config } from './config/index.js';
import type { Accounts } from './accounts/accounts.js';
import type { Uia } from './accounts/uia.js';
import type { AccountData } from './accounts/account-data.js';
import type { ServerKeys } from './federation/server-keys.js';
import type { KeyRing } from './federation/keyring.js';
import type { FederationClient } from './federation/client.js';
import type { AuthMiddleware } from './http/auth.js';
import type { RateLimiter } from './http/rate-limit.js';
import type { Notifier, NotifierBus } from './sync/notifier.js';
import type { E2ee } from './e2ee/index.js';
import type { UsersStore } from './storage/users-store.js';
import type { StreamsStore } from './storage/streams-store.js';
import type { AccountDataStore } from './storage/account-data-store.js';
import type { EventsStore } from './storage/events-store.js';
import type { RoomData } from './rooms/room-data.js';
import type { EventPersister } from './rooms/persist.js';
import type { RoomService } from './rooms/room-service.js';
import type { RoomReads } from './rooms/room-reads.js';
import type { Visibility } from './rooms/visibility.js';
import type { RoomDirectory } from './rooms/room-directory.js';
import type { RoomUpgrades } from './rooms/room-upgrade.js';
import type { SyncService } from './sync/sync-service.js';
import type { SyncWaiter } from './sync/waiter.js';
import type { Ephemeral } from './sync/ephemeral.js';
import type { FederationReceiver } from './federation/receiver.js';
import type { FederatedMembership } from './federation/membership.js';
import type { ReceivedEvents } from './rooms/received.js';
import type { SyncStore } from './storage/sync-store.js';
import type { PushRulesService } from './push/push-rules-service.js';
import type { PushNotifications } from './push/push-notifications.js';
import type { JobQueue } from './jobs/queue.js';
import type { FederationSender } from './federation/sender.js';
import type { FederationEdusStore } from './storage/federation-edus-store.js';
import type { RemoteDeviceLists } from './federation/remote-devices.js';
import type { FederationQueries } from './federation/queries.js';
import type { SpaceHierarchy } from './rooms/space-hierarchy.js';

export interface Services {
  config: Config;
  db: Knex;
  logger: Logger;
  stores: { users: UsersStore; streams: StreamsStore; accountData: AccountDataStore; events: EventsStore };
  accounts: Accounts;
  uia: Uia;
  accountData: AccountData;
  serverKeys: ServerKeys;
  /** Other servers' signing keys (cached; fetched directly or through notaries). */
  keyRing: KeyRing;
  /** Signed outgoing federation requests. */
  federationClient: FederationClient;
  roomData: RoomData;
  persister: EventPersister;
  rooms: RoomService;
  roomReads: RoomReads;
  visibility: Visibility;
  directory: RoomDirectory;
  upgrades: RoomUpgrades;
  /** Space hierarchies, for clients and for other servers. */
  hierarchy: SpaceHierarchy;
  syncStore: SyncStore;
  syncWaiter: SyncWaiter;
  syncService: SyncService;
  ephemeral: Ephemeral;
  federationReceiver: FederationReceiver;
  federatedMembership: FederatedMembership;
  received: ReceivedEvents;
  /** Redis pub/sub between processes sharing the database (null in the embedded default). */
  bus: NotifierBus | null;
  notifier: Notifier;
  e2ee: E2ee;
  pushRules: PushRulesService;
  pushNotifications: PushNotifications;
  /** Background jobs: BullMQ when redis.url is set, else in-process. */
  jobs: JobQueue;
  /** Outgoing federation (per-destination outbox); null when federation is disabled. */
  federationSender: FederationSender | null;
  federationEdusStore: FederationEdusStore;
  /** Device lists of remote users (EDUs, resyncs) and remote /keys/query, /keys/claim; null without federation. */
  remoteDevices: RemoteDeviceLists | null;
  /** Other servers' room directories and space hierarchies; null without federation. */
  federationQueries: FederationQueries | null;
  auth: AuthMiddleware;
  limiters: { login: RateLimiter; registration: RateLimiter; messages: RateLimiter; perIp: RateLimiter };
}
