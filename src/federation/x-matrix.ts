// X-Matrix request authentication (spec "Request Authentication"): the sender signs the canonical
// JSON of {method, uri, origin, destination, content?} and sends
//   Authorization: X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="..."
//
// Replay: the header carries no timestamp or nonce, and we keep no replay cache. Ed25519 signatures
// are deterministic, so a legitimate retry of the same request carries the same signature and a
// cache of seen (origin, sig) pairs would refuse it. A captured request can only be replayed by
// whoever can read it: TLS hides it from the network, and `destination` pins it to us. What
// remains (the destination itself replaying to itself) is harmless: PUT /send is idempotent per
// (origin, txnId) and the other federation endpoints are reads or idempotent.
import type { Middleware } from 'koa';
import { canonicalJson } from '../crypto/canonical-json.js';
import { signBytes, verifyBytes, type SigningKey } from '../crypto/signing.js';
import { readRawBody } from '../http/body.js';
import { MatrixError } from '../http/errors.js';
import { check, compile, type Schema } from '../http/validate.js';
import type { ValidateFunction } from 'ajv';
import type { KeyRing } from './keyring.js';
import { isValidServerName } from './server-name.js';

export interface XMatrixParams {
  origin: string;
  /** Absent from servers older than spec v1.3. */
  destination?: string;
  key: string;
  sig: string;
}

export interface SignedRequest {
  method: string;
  /** The request target: path and query string exactly as sent, e.g. `/_matrix/federation/v1/send/1?x=y`. */
  uri: string;
  origin: string;
  destination: string;
  /** The JSON body; omitted when the request has none. */
  content?: unknown;
}

/**
 * The signed bytes. Canonical JSON as signJson makes it, but floats are tolerated (bodies relayed
 * from old rooms can hold them; strict mode would refuse to sign or verify them at all).
 */
export function requestSigningPayload(r: SignedRequest): string {
  const obj: Record<string, unknown> = { method: r.method.toUpperCase(), uri: r.uri, origin: r.origin, destination: r.destination };
  if (r.content !== undefined) obj.content = r.content;
  return canonicalJson(obj, false);
}

/** The Authorization header value for an outgoing request. */
export function signRequest(r: SignedRequest, key: SigningKey): string {
  return formatXMatrix({ origin: r.origin, destination: r.destination, key: key.keyId, sig: signBytes(key, requestSigningPayload(r)) });
}

export function verifyRequestSignature(r: SignedRequest, sig: string, publicKeyBase64: string): boolean {
  return verifyBytes(publicKeyBase64, requestSigningPayload(r), sig);
}

/** Formats the header: one space after the scheme, lower-case names, every value quoted. */
export function formatXMatrix(p: XMatrixParams): string {
  const q = (v: string) => `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
  const parts = [`origin=${q(p.origin)}`];
  if (p.destination !== undefined) parts.push(`destination=${q(p.destination)}`);
  parts.push(`key=${q(p.key)}`, `sig=${q(p.sig)}`);
  return `X-Matrix ${parts.join(',')}`;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses an `X-Matrix` credentials header (RFC 7235 auth-params, as the spec describes): scheme
 * case-insensitive, names case-insensitive, values tokens or quoted strings with backslash escapes;
 * unquoted values may contain colons (older servers). Unknown parameters are ignored. Returns
 * undefined for another scheme, malformed syntax, a repeated parameter or a missing origin/key/sig.
 */
export function parseXMatrix(header: string): XMatrixParams | undefined {
  const m = /^x-matrix[ \t]+/i.exec(header);
  if (!m) return undefined;
  const s = header;
  let i = m[0].length;
  const params = new Map<string, string>();
  const ows = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  while (true) {
    ows();
    if (i >= s.length) break;
    if (s[i] === ',') {
      i++;
      continue;
    }
    const nameStart = i;
    while (i < s.length && TOKEN_CHAR.test(s[i])) i++;
    if (i === nameStart) return undefined;
    const name = s.slice(nameStart, i).toLowerCase();
    ows();
    if (s[i] !== '=') return undefined;
    i++;
    ows();
    let value = '';
    if (s[i] === '"') {
      i++;
      let closed = false;
      while (i < s.length) {
        const c = s[i];
        if (c === '\\') {
          if (i + 1 >= s.length) return undefined;
          value += s[i + 1];
          i += 2;
        } else if (c === '"') {
          i++;
          closed = true;
          break;
        } else {
          value += c;
          i++;
        }
      }
      if (!closed) return undefined;
    } else {
      const start = i;
      while (i < s.length && s[i] !== ',' && s[i] !== ' ' && s[i] !== '\t' && s[i] !== '"') i++;
      value = s.slice(start, i);
      if (!value) return undefined;
    }
    if (params.has(name)) return undefined;
    params.set(name, value);
    ows();
    if (i < s.length && s[i] !== ',') return undefined;
  }
  const origin = params.get('origin');
  const key = params.get('key');
  const sig = params.get('sig');
  if (!origin || !key || !sig) return undefined;
  const destination = params.get('destination');
  return { origin, key, sig, ...(destination !== undefined ? { destination } : {}) };
}

const unauthorized = (msg: string) => new MatrixError(401, 'M_UNAUTHORIZED', msg);

export interface ServerAuthOptions {
  /** Body size limit; defaults to ctx.state.maxBodyBytes. */
  maxBodyBytes?: number;
  now?: () => number;
}

/**
 * Authenticates a federation request: parses X-Matrix, reads and parses the JSON body (kept in
 * ctx.request.body; use validateServerBody after this, not validateBody, as the stream is consumed),
 * checks the destination, finds the origin's key valid now and verifies the signature. Sets
 * ctx.state.origin. Failures are 401 M_UNAUTHORIZED; a body that is not JSON is 400 M_NOT_JSON.
 */
export function requireServerAuth(keyring: KeyRing, serverName: string, opts: ServerAuthOptions = {}): Middleware {
  const now = opts.now ?? Date.now;
  return async (ctx, next) => {
    const header = ctx.get('authorization');
    if (!header) throw unauthorized('Missing Authorization header');
    const auth = parseXMatrix(header);
    if (!auth) throw unauthorized('Malformed X-Matrix Authorization header');
    if (auth.destination !== undefined && auth.destination !== serverName) throw unauthorized(`Request is for ${auth.destination}, not this server`);
    if (!isValidServerName(auth.origin)) throw unauthorized('Invalid origin server name');
    if (!auth.key.startsWith('ed25519:')) throw unauthorized('Unsupported key algorithm');

    const raw = await readRawBody(ctx, opts.maxBodyBytes ?? (ctx.state.maxBodyBytes as number));
    let content: unknown;
    if (raw.length) {
      try {
        content = JSON.parse(raw.toString('utf8'));
      } catch {
        throw new MatrixError(400, 'M_NOT_JSON', 'Content not JSON.');
      }
    }
    const key = await keyring.publicKey(auth.origin, auth.key, now());
    if (!key) throw unauthorized(`Unknown or expired key ${auth.key} for ${auth.origin}`);
    const signed: SignedRequest = { method: ctx.method, uri: ctx.originalUrl, origin: auth.origin, destination: serverName, content };
    if (!verifyRequestSignature(signed, auth.sig, key)) throw unauthorized('Invalid request signature');
    ctx.state.origin = auth.origin;
    ctx.request.body = content;
    await next();
  };
}

/**
 * Validates the body requireServerAuth already parsed (an absent body counts as `{}`), with the same
 * errors as validateBody: M_NOT_JSON for a non-object, M_BAD_JSON / M_MISSING_PARAM for the shape.
 */
export function validateServerBody<T>(schema: Schema<T> | ValidateFunction<T>): Middleware {
  const validator = typeof schema === 'function' ? schema : compile(schema);
  return async (ctx, next) => {
    let body = ctx.request.body;
    if (body === undefined) body = {};
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new MatrixError(400, 'M_NOT_JSON', 'Content must be a JSON object');
    ctx.request.body = check(validator, body);
    await next();
  };
}
