// Outgoing federation requests on undici: one connection pool per destination (keep-alive), TLS with
// SNI = the server name and certificates checked against the system CAs plus federation.ca_file,
// every request signed with X-Matrix (spec "Request Authentication"), private and loopback addresses
// refused unless federation.allow_private_addresses (checked on the resolved IP, at connect time,
// so DNS cannot smuggle one in), and per-destination exponential backoff after connection failures.
//
// Errors: an HTTP error status is a FederationError (status, errcode, body). A destination that could
// not be reached (DNS, connect, TLS, timeout, refused private address), or one still backing off
// from such a failure, is a DestinationUnavailable carrying when it may be retried. Backoff is per
// process and in memory; a success, or markUp() (e.g. the server just sent us a transaction),
// clears it.
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { rootCertificates } from 'node:tls';
import { Pool } from 'undici';
import type { Logger } from 'pino';
import type { SigningKey } from '../crypto/signing.js';
import { ServerResolver, originOf, type ResolvedServer, type WellKnownResponse } from './resolver.js';
import { formatHostPort } from './server-name.js';
import { signRequest } from './x-matrix.js';
import { SERVER_SOFTWARE, SERVER_VERSION } from './version.js';

export class FederationError extends Error {
  constructor(
    readonly destination: string,
    readonly status: number,
    readonly errcode: string | undefined,
    readonly body: unknown,
    message?: string,
  ) {
    super(message ?? `${destination} answered ${status}${errcode ? ` ${errcode}` : ''}`);
    this.name = 'FederationError';
  }
}

export class DestinationUnavailable extends Error {
  constructor(
    readonly destination: string,
    /** When a request may be tried again (ms since the epoch). */
    readonly retryAt: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DestinationUnavailable';
  }
}

export type Query = Record<string, string | string[] | number | boolean | undefined>;

export interface FederationRequestOptions {
  /** JSON body (PUT/POST). */
  body?: unknown;
  query?: Query;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Sign with X-Matrix (default true). */
  authenticated?: boolean;
  /** Send even while the destination is backing off (e.g. a join the user is waiting for). */
  ignoreBackoff?: boolean;
  maxResponseBytes?: number;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
export type LookupFunction = (hostname: string, options: LookupOptions, callback: LookupCallback) => void;

export interface FederationClientOptions {
  serverName: string;
  /** Our current signing key (read per request, so key rotation needs no restart). */
  signingKey: () => SigningKey;
  serverNameMap?: Readonly<Record<string, string>>;
  allowPrivateAddresses?: boolean;
  /** Path of a PEM bundle trusted in addition to the system CAs. */
  caFile?: string | null;
  resolver?: ServerResolver;
  /** DNS A/AAAA lookup (node:dns by default); tests inject one. */
  lookup?: LookupFunction;
  logger?: Logger;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  maxResponseBytes?: number;
  now?: () => number;
}

const PRIVATE = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) PRIVATE.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['100::', 64], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) PRIVATE.addSubnet(net, prefix, 'ipv6');

/** Loopback, private, link-local, multicast, documentation and other non-public addresses. */
export function isPrivateAddress(address: string): boolean {
  const v = isIP(address);
  if (v === 4) return PRIVATE.check(address, 'ipv4');
  if (v !== 6) return true;
  const lower = address.toLowerCase();
  // IPv4-mapped (::ffff:a.b.c.d or ::ffff:xxxx:xxxx) and IPv4-compatible addresses: check the IPv4 part.
  const dotted = /^(?:::|(?:0{1,4}:){5})(?:ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/.exec(lower);
  if (dotted && isIP(dotted[1]) === 4) return PRIVATE.check(dotted[1], 'ipv4');
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex) {
    const a = parseInt(hex[1], 16);
    const b = parseInt(hex[2], 16);
    return PRIVATE.check(`${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`, 'ipv4');
  }
  return PRIVATE.check(address, 'ipv6');
}

/** Wraps a DNS lookup so that it never yields private addresses (unless allowed). */
export function guardedLookup(allowPrivate: boolean, base: LookupFunction = dnsLookup as unknown as LookupFunction): LookupFunction {
  return (hostname, options, callback) => {
    base(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '');
      const list = (addresses as LookupAddress[]).filter((a) => allowPrivate || !isPrivateAddress(a.address));
      if (!list.length) {
        const e: NodeJS.ErrnoException = new Error(`${hostname} resolves only to private addresses (federation.allow_private_addresses is off)`);
        e.code = 'EPRIVATEADDRESS';
        return callback(e, '');
      }
      if (options.all) callback(null, list);
      else callback(null, list[0].address, list[0].family);
    });
  };
}

const DEFAULT_MAX_RESPONSE = 100 * 1024 * 1024;
const WELL_KNOWN_MAX_BYTES = 64 * 1024;

export class FederationClient {
  readonly resolver: ServerResolver;
  private readonly pools = new Map<string, { key: string; pool: Pool }>();
  private readonly backoffs = new Map<string, { failures: number; until: number }>();
  private readonly ca: string[] | undefined;
  private readonly lookup: LookupFunction;
  private readonly now: () => number;
  private readonly userAgent = `${SERVER_SOFTWARE}/${SERVER_VERSION}`;
  private closed = false;

  constructor(private readonly opts: FederationClientOptions) {
    this.now = opts.now ?? Date.now;
    this.ca = opts.caFile ? [...rootCertificates, readFileSync(opts.caFile, 'utf8')] : undefined;
    this.lookup = guardedLookup(!!opts.allowPrivateAddresses, opts.lookup);
    this.resolver = opts.resolver ?? new ServerResolver({ serverNameMap: opts.serverNameMap, fetchWellKnown: (h) => this.fetchWellKnown(h) });
  }

  get serverName(): string {
    return this.opts.serverName;
  }

  /**
   * A federation request to `destination` (a server name), signed with X-Matrix unless
   * `authenticated: false`. `path` starts with /_matrix and is sent (and signed) as given, so
   * encode path parameters with encodeURIComponent. Resolves to the parsed JSON response body.
   */
  async request<T>(destination: string, method: string, path: string, opts: FederationRequestOptions = {}): Promise<T> {
    if (this.closed) throw new Error('federation client closed');
    method = method.toUpperCase();
    if (!opts.ignoreBackoff) {
      const b = this.backoffs.get(destination);
      if (b && b.until > this.now()) throw new DestinationUnavailable(destination, b.until, `${destination} is unreachable; not retrying until ${new Date(b.until).toISOString()}`);
    }
    const uri = path + queryString(opts.query);
    const hasBody = opts.body !== undefined;
    const timeoutMs = opts.timeoutMs ?? this.opts.requestTimeoutMs ?? 60_000;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;

    let target: ResolvedServer;
    let res: Awaited<ReturnType<Pool['request']>>;
    try {
      target = await this.resolver.resolve(destination);
      if (isIP(target.host) && !this.opts.allowPrivateAddresses && isPrivateAddress(target.host)) {
        const e: NodeJS.ErrnoException = new Error(`${destination} resolves to the private address ${target.host} (federation.allow_private_addresses is off)`);
        e.code = 'EPRIVATEADDRESS';
        throw e;
      }
      const headers: Record<string, string> = { host: target.hostHeader, 'user-agent': this.userAgent, accept: 'application/json' };
      if (opts.authenticated !== false) {
        headers.authorization = signRequest({ method, uri, origin: this.opts.serverName, destination, content: opts.body }, this.opts.signingKey());
      }
      if (hasBody) headers['content-type'] = 'application/json';
      res = await this.poolFor(destination, target).request({ method, path: uri, headers, body: hasBody ? JSON.stringify(opts.body) : undefined, signal });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw this.failed(destination, err, timeout.aborted ? `timed out after ${timeoutMs} ms` : undefined);
    }

    let text: string;
    try {
      text = await readLimited(res.body, opts.maxResponseBytes ?? this.opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE);
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw this.failed(destination, err, timeout.aborted ? `timed out after ${timeoutMs} ms reading the response` : undefined);
    }
    this.backoffs.delete(destination);
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = text;
    }
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const errcode = typeof (body as { errcode?: unknown })?.errcode === 'string' ? (body as { errcode: string }).errcode : undefined;
      const msg = typeof (body as { error?: unknown })?.error === 'string' ? (body as { error: string }).error : undefined;
      throw new FederationError(destination, res.statusCode, errcode, body, `${method} ${path} on ${destination}: ${res.statusCode}${errcode ? ` ${errcode}` : ''}${msg ? `: ${msg}` : ''}`);
    }
    if (typeof body === 'string') throw new FederationError(destination, res.statusCode, undefined, body, `${method} ${path} on ${destination}: response is not JSON`);
    return body as T;
  }

  /** An unauthenticated GET (server keys and the like). */
  async getJson<T>(destination: string, path: string, opts: Omit<FederationRequestOptions, 'body' | 'authenticated'> = {}): Promise<T> {
    return this.request<T>(destination, 'GET', path, { ...opts, authenticated: false });
  }

  /** When requests to `destination` will be tried again, if it is backing off. */
  backoffUntil(destination: string): number | undefined {
    const b = this.backoffs.get(destination);
    return b && b.until > this.now() ? b.until : undefined;
  }

  /** Clears the backoff (we just heard from the server, so it is up). */
  markUp(destination: string): void {
    this.backoffs.delete(destination);
  }

  /**
   * GET https://<hostname>/.well-known/matrix/server on port 443 with the usual certificate checks,
   * following up to 5 redirects (to https URLs only) and refusing private addresses like any request.
   */
  async fetchWellKnown(hostname: string): Promise<WellKnownResponse> {
    let url = new URL(`https://${formatHostPort(hostname)}/.well-known/matrix/server`);
    for (let hop = 0; hop <= 5; hop++) {
      if (url.protocol !== 'https:') throw new Error('well-known redirected away from https');
      const host = url.hostname.replace(/^\[|\]$/g, '');
      if (isIP(host) && !this.opts.allowPrivateAddresses && isPrivateAddress(host)) throw new Error('well-known on a private address');
      const pool = new Pool(url.origin, { connections: 1, connect: this.connectOptions(undefined) });
      try {
        const res = await pool.request({ method: 'GET', path: url.pathname + url.search, headers: { 'user-agent': this.userAgent }, signal: AbortSignal.timeout(10_000) });
        if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location) {
          await res.body.dump();
          url = new URL(String(res.headers.location), url);
          continue;
        }
        const text = await readLimited(res.body, WELL_KNOWN_MAX_BYTES);
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        return { status: res.statusCode, headers: res.headers as Record<string, string | string[] | undefined>, body };
      } finally {
        void pool.close().catch(() => undefined);
      }
    }
    throw new Error('too many well-known redirects');
  }

  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.pools.values()].map((p) => p.pool);
    this.pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  private connectOptions(servername: string | undefined) {
    return {
      ca: this.ca,
      rejectUnauthorized: true,
      ...(servername ? { servername } : {}),
      timeout: this.opts.connectTimeoutMs ?? 10_000,
      lookup: this.lookup,
    };
  }

  private poolFor(destination: string, r: ResolvedServer): Pool {
    const key = `${r.host}|${r.port}|${r.tlsServername ?? ''}`;
    const have = this.pools.get(destination);
    if (have && have.key === key) {
      this.pools.delete(destination); // LRU: move to the end
      this.pools.set(destination, have);
      return have.pool;
    }
    if (have) void have.pool.close().catch(() => undefined);
    const pool = new Pool(originOf(r), {
      connections: 16,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 600_000,
      headersTimeout: 0,
      bodyTimeout: 0,
      connect: this.connectOptions(r.tlsServername),
    });
    this.pools.delete(destination);
    this.pools.set(destination, { key, pool });
    if (this.pools.size > 2000) {
      const [oldest, p] = this.pools.entries().next().value as [string, { pool: Pool }];
      this.pools.delete(oldest);
      void p.pool.close().catch(() => undefined);
    }
    return pool;
  }

  /** Records a connection failure and returns the error to throw. */
  private failed(destination: string, err: unknown, reason?: string): DestinationUnavailable {
    const now = this.now();
    const { initialMs, maxMs } = this.opts.backoff ?? { initialMs: 5_000, maxMs: 3_600_000 };
    const prev = this.backoffs.get(destination);
    const failures = (prev?.failures ?? 0) + 1;
    const delay = Math.min(maxMs, initialMs * 2 ** Math.min(failures - 1, 30));
    const until = now + delay;
    this.backoffs.set(destination, { failures, until });
    if (this.backoffs.size > 10_000) this.backoffs.delete(this.backoffs.keys().next().value as string);
    const e = err as NodeJS.ErrnoException;
    const why = reason ?? (e?.code ? `${e.code}: ${e.message}` : (e?.message ?? String(err)));
    this.opts.logger?.debug({ destination, failures, retryInMs: delay, err: why }, 'federation destination unreachable');
    return new DestinationUnavailable(destination, until, `cannot reach ${destination}: ${why}`, { cause: err });
  }
}

function queryString(q: Query | undefined): string {
  if (!q) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    for (const item of Array.isArray(v) ? v : [v]) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(item))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

async function readLimited(body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown }, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      throw new Error(`response larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
