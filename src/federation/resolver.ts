// Server name → where to connect (spec "Resolving server names"):
//   1. IP literal: that address, the given port or 8448; Host = the server name; no SNI.
//   2. Host name with an explicit port: that host (A/AAAA at connect time) and port.
//   3. GET https://<hostname>/.well-known/matrix/server → m.server = <delegated>[:<port>], then
//      IP literal / explicit port / SRV _matrix-fed._tcp.<delegated> / deprecated _matrix._tcp /
//      <delegated>:8448, with Host and certificate name <delegated>.
//   4. SRV _matrix-fed._tcp.<hostname>, then 5. the deprecated _matrix._tcp.<hostname>.
//   6. <hostname>:8448.
// For SRV results the certificate and Host header are still the (delegated) hostname, not the SRV
// target. The config's server_name_map (name → host:port) overrides all of this, keeping the server
// name as SNI and Host (private networks, tests).
//
// Caching: /.well-known answers follow Cache-Control max-age / no-store / Expires, defaulting to 24 h,
// clamped to [5 min, 48 h]; errors and invalid answers are cached for 1 h. SRV answers (positive or
// not) are cached for 10 min, as node:dns does not report their TTL.
import { promises as dnsPromises, type SrvRecord } from 'node:dns';
import { formatHostPort, parseServerName } from './server-name.js';

export interface ResolvedServer {
  /** Where to connect: an IP address, or a host name looked up (A/AAAA) when connecting. */
  host: string;
  port: number;
  /** SNI and the name the certificate must be valid for; undefined for IP literals (no SNI is sent). */
  tlsServername?: string;
  /** The Host header to send. */
  hostHeader: string;
}

export interface WellKnownResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

export interface ResolverOptions {
  serverNameMap?: Readonly<Record<string, string>>;
  /** SRV lookup; node:dns by default. Tests inject one. */
  resolveSrv?: (name: string) => Promise<SrvRecord[]>;
  /** GET https://<hostname>/.well-known/matrix/server (following redirects); throws on network errors. */
  fetchWellKnown?: (hostname: string) => Promise<WellKnownResponse>;
  now?: () => number;
  random?: () => number;
}

export const DEFAULT_FEDERATION_PORT = 8448;
export const WELL_KNOWN_DEFAULT_CACHE_MS = 24 * 3600_000;
export const WELL_KNOWN_MAX_CACHE_MS = 48 * 3600_000;
export const WELL_KNOWN_MIN_CACHE_MS = 5 * 60_000;
export const WELL_KNOWN_ERROR_CACHE_MS = 3600_000;
const SRV_CACHE_MS = 10 * 60_000;
const CACHE_MAX = 10_000;

export class ServerResolver {
  private readonly wellKnownCache = new Map<string, { server: string | null; until: number }>();
  private readonly srvCache = new Map<string, { record: { name: string; port: number } | null; until: number }>();
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly opts: ResolverOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  async resolve(serverName: string): Promise<ResolvedServer> {
    const parsed = parseServerName(serverName);
    if (!parsed) throw new Error(`invalid server name: ${serverName}`);

    const mapped = this.opts.serverNameMap?.[serverName];
    if (mapped !== undefined) {
      const target = parseServerName(mapped);
      if (!target || target.port === undefined) throw new Error(`server_name_map entry for ${serverName} must be host:port, got ${mapped}`);
      return { host: target.host, port: target.port, tlsServername: parsed.ipVersion ? undefined : parsed.host, hostHeader: serverName };
    }

    // 1. IP literal.
    if (parsed.ipVersion) return { host: parsed.host, port: parsed.port ?? DEFAULT_FEDERATION_PORT, hostHeader: serverName };
    // 2. Explicit port.
    if (parsed.port !== undefined) return { host: parsed.host, port: parsed.port, tlsServername: parsed.host, hostHeader: serverName };

    // 3. /.well-known delegation.
    const delegated = await this.wellKnown(parsed.host);
    if (delegated) {
      const d = parseServerName(delegated)!;
      if (d.ipVersion) return { host: d.host, port: d.port ?? DEFAULT_FEDERATION_PORT, hostHeader: delegated };
      if (d.port !== undefined) return { host: d.host, port: d.port, tlsServername: d.host, hostHeader: delegated };
      const srv = await this.srv(d.host);
      if (srv) return { host: srv.name, port: srv.port, tlsServername: d.host, hostHeader: d.host };
      return { host: d.host, port: DEFAULT_FEDERATION_PORT, tlsServername: d.host, hostHeader: d.host };
    }

    // 4./5. SRV, 6. port 8448.
    const srv = await this.srv(parsed.host);
    if (srv) return { host: srv.name, port: srv.port, tlsServername: parsed.host, hostHeader: parsed.host };
    return { host: parsed.host, port: DEFAULT_FEDERATION_PORT, tlsServername: parsed.host, hostHeader: parsed.host };
  }

  /** Forgets cached discovery for a server (e.g. after its delegation changed). */
  forget(serverName: string): void {
    const host = parseServerName(serverName)?.host;
    if (!host) return;
    this.wellKnownCache.delete(host);
    this.srvCache.delete(host);
  }

  /** The delegated server name from /.well-known/matrix/server, or null (cached per the rules above). */
  private async wellKnown(hostname: string): Promise<string | null> {
    const now = this.now();
    const hit = this.wellKnownCache.get(hostname);
    if (hit && hit.until > now) return hit.server;
    let server: string | null = null;
    let ttl = WELL_KNOWN_ERROR_CACHE_MS;
    try {
      if (!this.opts.fetchWellKnown) throw new Error('no well-known fetcher');
      const res = await this.opts.fetchWellKnown(hostname);
      if (res.status === 200) {
        const m = (res.body as Record<string, unknown> | null)?.['m.server'];
        if (typeof m === 'string' && parseServerName(m)) {
          server = m;
          ttl = wellKnownCacheMs(res.headers, now);
        }
      }
    } catch {
      // Network errors, TLS failures, bad JSON: fall through to SRV, cached as an error.
    }
    setBounded(this.wellKnownCache, hostname, { server, until: now + ttl });
    return server;
  }

  /** _matrix-fed._tcp, then the deprecated _matrix._tcp; the chosen record or null. */
  private async srv(hostname: string): Promise<{ name: string; port: number } | null> {
    const now = this.now();
    const hit = this.srvCache.get(hostname);
    if (hit && hit.until > now) return hit.record;
    const lookup = this.opts.resolveSrv ?? ((n: string) => dnsPromises.resolveSrv(n));
    let record: { name: string; port: number } | null = null;
    for (const service of ['_matrix-fed._tcp', '_matrix._tcp']) {
      let records: SrvRecord[] = [];
      try {
        records = await lookup(`${service}.${hostname}`);
      } catch {
        records = [];
      }
      record = pickSrv(records, this.random);
      if (record) break;
    }
    setBounded(this.srvCache, hostname, { record, until: now + SRV_CACHE_MS });
    return record;
  }
}

/**
 * RFC 2782 selection: lowest priority, then weighted random among equals. A lone target of "."
 * means the service is decidedly not available.
 */
export function pickSrv(records: SrvRecord[], random: () => number = Math.random): { name: string; port: number } | null {
  const usable = records.filter((r) => r.name && r.name !== '.' && r.port > 0);
  if (!usable.length) return null;
  const best = Math.min(...usable.map((r) => r.priority));
  const group = usable.filter((r) => r.priority === best);
  const total = group.reduce((n, r) => n + r.weight, 0);
  let chosen = group[0];
  if (total > 0) {
    let x = random() * total;
    for (const r of group) {
      x -= r.weight;
      if (x < 0) {
        chosen = r;
        break;
      }
    }
  }
  return { name: chosen.name.replace(/\.$/, ''), port: chosen.port };
}

/** Cache lifetime of a successful /.well-known answer from its headers. */
export function wellKnownCacheMs(headers: Record<string, string | string[] | undefined>, now: number): number {
  const get = (k: string) => {
    const v = headers[k] ?? headers[k.toLowerCase()];
    return Array.isArray(v) ? v.join(',') : v;
  };
  let ms: number | undefined;
  const cc = get('cache-control');
  if (cc) {
    const directives = cc.toLowerCase().split(',').map((d) => d.trim());
    if (directives.includes('no-store')) ms = 0;
    else {
      const maxAge = directives.map((d) => /^max-age=(\d+)$/.exec(d)).find(Boolean);
      if (maxAge) ms = Number(maxAge[1]) * 1000;
    }
  }
  if (ms === undefined) {
    const expires = get('expires');
    if (expires) {
      const t = Date.parse(expires);
      ms = Number.isNaN(t) ? 0 : t - now;
    }
  }
  if (ms === undefined) return WELL_KNOWN_DEFAULT_CACHE_MS;
  return Math.min(WELL_KNOWN_MAX_CACHE_MS, Math.max(WELL_KNOWN_MIN_CACHE_MS, ms));
}

/** `https://host:port` for a resolved server (IPv6 bracketed). */
export function originOf(r: ResolvedServer): string {
  return `https://${formatHostPort(r.host, r.port)}`;
}

function setBounded<K, V>(m: Map<K, V>, k: K, v: V): void {
  m.delete(k);
  m.set(k, v);
  if (m.size > CACHE_MAX) m.delete(m.keys().next().value as K);
}
