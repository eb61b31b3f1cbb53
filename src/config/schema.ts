// The configuration file's shape. ajv applies the defaults and names the key that is wrong.

export type ApiName = 'client' | 'federation' | 'media' | 'metrics' | 'admin' | 'keys';
export type RegistrationMode = 'open' | 'token' | 'closed';

export interface ListenerConfig {
  address: string;
  port: number;
  tls?: { certificate: string; key: string };
  apis: ApiName[];
  /** Trust X-Forwarded-For from a reverse proxy in front of this listener. */
  x_forwarded: boolean;
}

export interface RateLimitRule { per_second: number; burst: number }

export interface Config {
  server_name: string;
  public_baseurl: string | null;
  data_dir: string;
  database: { url: string; sqlite_synchronous: 'full' | 'normal'; pool_max: number };
  redis: { url: string | null };
  listeners: ListenerConfig[];
  registration: {
    mode: RegistrationMode;
    shared_secret: string | null;
    /** Lifetime of an access token issued to a client that asked for a refresh token. */
    access_token_lifetime_ms: number;
  };
  rate_limits: {
    enabled: boolean;
    login: RateLimitRule;
    registration: RateLimitRule;
    messages: RateLimitRule;
    per_ip: RateLimitRule;
    exempt_user_ids: string[];
  };
  limits: { max_body_bytes: number; max_upload_bytes: number };
  logging: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  well_known: {
    client_base_url: string | null;
    server: string | null;
    support: { contacts: { role: string; matrix_id?: string; email_address?: string }[]; support_page: string | null };
  };
  rooms: { default_version: string };
  presence: { enabled: boolean };
  federation: {
    enabled: boolean;
    server_name_map: Record<string, string>;
    allow_private_addresses: boolean;
    trusted_key_servers: { server_name: string; verify_keys?: Record<string, string> }[];
    ca_file: string | null;
  };
}

const rateRule = {
  type: 'object',
  additionalProperties: false,
  required: ['per_second', 'burst'],
  properties: { per_second: { type: 'number', exclusiveMinimum: 0 }, burst: { type: 'integer', minimum: 1 } },
};

export const configSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    server_name: { type: 'string', minLength: 1, pattern: '^[A-Za-z0-9.\\-\\[\\]:]+$', default: 'localhost:8008' },
    public_baseurl: { type: ['string', 'null'], default: null },
    data_dir: { type: 'string', default: './data' },
    database: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        url: { type: 'string', pattern: '^(sqlite:|postgres:|postgresql:)', default: 'sqlite:homeserver.db' },
        sqlite_synchronous: { enum: ['full', 'normal'], default: 'full' },
        pool_max: { type: 'integer', minimum: 1, maximum: 200, default: 10 },
      },
    },
    redis: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { url: { type: ['string', 'null'], pattern: '^rediss?://', default: null } },
    },
    listeners: {
      type: 'array',
      minItems: 1,
      default: [{ address: '127.0.0.1', port: 8008, apis: ['client', 'federation', 'media', 'metrics', 'admin', 'keys'] }],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['port'],
        properties: {
          address: { type: 'string', default: '127.0.0.1' },
          port: { type: 'integer', minimum: 0, maximum: 65535 },
          tls: {
            type: 'object',
            additionalProperties: false,
            required: ['certificate', 'key'],
            properties: { certificate: { type: 'string' }, key: { type: 'string' } },
          },
          apis: {
            type: 'array',
            minItems: 1,
            uniqueItems: true,
            items: { enum: ['client', 'federation', 'media', 'metrics', 'admin', 'keys'] },
            default: ['client', 'federation', 'media', 'keys'],
          },
          x_forwarded: { type: 'boolean', default: false },
        },
      },
    },
    registration: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        mode: { enum: ['open', 'token', 'closed'] },
        shared_secret: { type: ['string', 'null'], default: null },
        access_token_lifetime_ms: { type: 'integer', minimum: 60000, default: 3600000 },
      },
    },
    rate_limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        enabled: { type: 'boolean', default: true },
        login: { ...rateRule, default: { per_second: 0.17, burst: 3 } },
        registration: { ...rateRule, default: { per_second: 0.17, burst: 3 } },
        messages: { ...rateRule, default: { per_second: 10, burst: 50 } },
        per_ip: { ...rateRule, default: { per_second: 50, burst: 200 } },
        exempt_user_ids: { type: 'array', items: { type: 'string' }, default: [] },
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        max_body_bytes: { type: 'integer', minimum: 1024, default: 1048576 },
        max_upload_bytes: { type: 'integer', minimum: 1024, default: 52428800 },
      },
    },
    logging: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' } },
    },
    well_known: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        client_base_url: { type: ['string', 'null'], default: null },
        server: { type: ['string', 'null'], default: null },
        support: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            contacts: {
              type: 'array',
              default: [],
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['role'],
                properties: { role: { type: 'string' }, matrix_id: { type: 'string' }, email_address: { type: 'string' } },
              },
            },
            support_page: { type: ['string', 'null'], default: null },
          },
        },
      },
    },
    rooms: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { default_version: { type: 'string', enum: ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12'], default: '12' } },
    },
    presence: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { enabled: { type: 'boolean', default: true } },
    },
    federation: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        enabled: { type: 'boolean', default: true },
        server_name_map: { type: 'object', additionalProperties: { type: 'string' }, default: {} },
        allow_private_addresses: { type: 'boolean', default: false },
        trusted_key_servers: {
          type: 'array',
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['server_name'],
            properties: { server_name: { type: 'string' }, verify_keys: { type: 'object', additionalProperties: { type: 'string' } } },
          },
        },
        ca_file: { type: ['string', 'null'], default: null },
      },
    },
  },
} as const;
