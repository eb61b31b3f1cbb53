// Reads and parses JSON request bodies with a size limit. The body is read lazily by the
// validateBody middleware, so endpoints without a body never buffer one.
import getRawBody from 'raw-body';
import type { Context } from 'koa';
import { MatrixError } from './errors.js';

export async function readRawBody(ctx: Context, limit: number): Promise<Buffer> {
  const declared = Number(ctx.get('content-length') || NaN);
  if (Number.isFinite(declared) && declared > limit) {
    throw new MatrixError(413, 'M_TOO_LARGE', `Request body exceeds ${limit} bytes`);
  }
  return getRawBody(ctx.req, { limit });
}

export async function readJsonBody(ctx: Context, limit: number): Promise<unknown> {
  const raw = await readRawBody(ctx, limit);
  if (raw.length === 0) return undefined;
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new MatrixError(400, 'M_NOT_JSON', 'Content not JSON.');
  }
}
