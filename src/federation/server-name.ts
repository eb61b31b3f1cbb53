// Server names (spec appendix "Server Name"): `host[:port]`, where host is an IPv4 literal, an
// IPv6 literal in brackets, or a DNS name of at most 255 characters from [A-Za-z0-9.-].
import { isIP } from 'node:net';

export interface ParsedServerName {
  /** The host without brackets: a DNS name or an IP address. */
  host: string;
  port?: number;
  /** 4 or 6 for an IP literal, else 0. */
  ipVersion: 0 | 4 | 6;
}

const DNS_NAME = /^[A-Za-z0-9.-]{1,255}$/;

/** Parses a server name, returning undefined when it does not match the grammar. */
export function parseServerName(name: string): ParsedServerName | undefined {
  if (typeof name !== 'string' || name.length === 0 || name.length > 262) return undefined;
  let host: string;
  let rest: string;
  if (name.startsWith('[')) {
    const end = name.indexOf(']');
    if (end < 0) return undefined;
    host = name.slice(1, end);
    if (isIP(host) !== 6) return undefined;
    rest = name.slice(end + 1);
  } else {
    const colon = name.indexOf(':');
    host = colon < 0 ? name : name.slice(0, colon);
    rest = colon < 0 ? '' : name.slice(colon);
    if (!DNS_NAME.test(host)) return undefined;
  }
  let port: number | undefined;
  if (rest) {
    if (!/^:[0-9]{1,5}$/.test(rest)) return undefined;
    port = Number(rest.slice(1));
    if (port < 1 || port > 65535) return undefined;
  }
  const v = isIP(host);
  return { host, port, ipVersion: v === 4 ? 4 : v === 6 ? 6 : 0 };
}

export function isValidServerName(name: string): boolean {
  return parseServerName(name) !== undefined;
}

/** `host[:port]` with IPv6 hosts bracketed, as used in Host headers and URLs. */
export function formatHostPort(host: string, port?: number): string {
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return port === undefined ? h : `${h}:${port}`;
}
