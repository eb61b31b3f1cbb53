// One schema gives validation and the type. Unparseable → M_NOT_JSON; wrong shape → M_BAD_JSON;
// absent required key → M_MISSING_PARAM.
import { Ajv, type JSONSchemaType, type ValidateFunction, type ErrorObject } from 'ajv';
import type { Middleware } from 'koa';
import { readJsonBody } from './body.js';
import { MatrixError } from './errors.js';

export const ajv = new Ajv({ allErrors: false, strict: false, coerceTypes: false, useDefaults: true });

export type Schema<T> = JSONSchemaType<T> | Record<string, unknown>;

export function compile<T>(schema: Schema<T>): ValidateFunction<T> {
  return ajv.compile<T>(schema as JSONSchemaType<T>);
}

function toMatrixError(errors: ErrorObject[] | null | undefined): MatrixError {
  const e = errors?.[0];
  if (!e) return new MatrixError(400, 'M_BAD_JSON', 'Invalid request body');
  const where = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : 'body';
  if (e.keyword === 'required') {
    const key = (e.params as { missingProperty: string }).missingProperty;
    return new MatrixError(400, 'M_MISSING_PARAM', `Missing parameter: ${e.instancePath ? `${where}.` : ''}${key}`);
  }
  return new MatrixError(400, 'M_BAD_JSON', `Invalid ${where}: ${e.message ?? 'bad value'}`);
}

/** Checks a value against a compiled schema, throwing the Matrix error. */
export function check<T>(validator: ValidateFunction<T>, value: unknown): T {
  if (!validator(value)) throw toMatrixError(validator.errors);
  return value;
}

/**
 * Parses the JSON body and validates it. An absent body counts as `{}` (many endpoints allow it).
 * The result is in ctx.request.body.
 */
export function validateBody<T>(schema: Schema<T> | ValidateFunction<T>, opts: { limit?: number } = {}): Middleware {
  const validator = typeof schema === 'function' ? schema : compile(schema);
  return async (ctx, next) => {
    const limit = opts.limit ?? (ctx.state.maxBodyBytes as number);
    let body = await readJsonBody(ctx, limit);
    if (body === undefined) body = {};
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new MatrixError(400, 'M_NOT_JSON', 'Content must be a JSON object');
    }
    (ctx.request as { body?: unknown }).body = check(validator, body);
    await next();
  };
}

/** Query parameter helpers. */
export function queryString(q: Record<string, string | string[] | undefined>, key: string): string | undefined {
  const v = q[key];
  return Array.isArray(v) ? v[0] : v;
}

export function queryInt(q: Record<string, string | string[] | undefined>, key: string, opts: { min?: number; max?: number; def?: number } = {}): number | undefined {
  const raw = queryString(q, key);
  if (raw === undefined || raw === '') return opts.def;
  if (!/^-?\d+$/.test(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', `Query parameter '${key}' must be an integer`);
  const n = Number(raw);
  if (opts.min !== undefined && n < opts.min) throw new MatrixError(400, 'M_INVALID_PARAM', `Query parameter '${key}' must be at least ${opts.min}`);
  return opts.max !== undefined ? Math.min(n, opts.max) : n;
}

export function queryBool(q: Record<string, string | string[] | undefined>, key: string, def = false): boolean {
  const raw = queryString(q, key);
  if (raw === undefined) return def;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw new MatrixError(400, 'M_INVALID_PARAM', `Query parameter '${key}' must be true or false`);
}

declare module 'koa' {
  interface Request {
    /** The validated JSON body, set by validateBody. */
    body?: unknown;
  }
}
