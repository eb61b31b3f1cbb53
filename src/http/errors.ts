// Every error a client or server sees is rendered here: spec errcode + human text + HTTP status.

export class MatrixError extends Error {
  constructor(
    public readonly status: number,
    public readonly errcode: string,
    message: string,
    public readonly extra: Record<string, unknown> = {},
    public readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toJSON(): Record<string, unknown> {
    return { errcode: this.errcode, error: this.message, ...this.extra };
  }
}

export const forbidden = (msg: string) => new MatrixError(403, 'M_FORBIDDEN', msg);
export const notFound = (msg: string) => new MatrixError(404, 'M_NOT_FOUND', msg);
export const badJson = (msg: string) => new MatrixError(400, 'M_BAD_JSON', msg);
export const invalidParam = (msg: string) => new MatrixError(400, 'M_INVALID_PARAM', msg);
export const missingParam = (msg: string) => new MatrixError(400, 'M_MISSING_PARAM', msg);
export const unrecognized = (msg = 'Unrecognized request', status = 404) => new MatrixError(status, 'M_UNRECOGNIZED', msg);
export const unknownToken = (msg = 'Unknown access token', softLogout = false) =>
  new MatrixError(401, 'M_UNKNOWN_TOKEN', msg, { soft_logout: softLogout });
export const missingToken = () => new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
export const limitExceeded = (retryAfterMs: number) =>
  new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many requests', { retry_after_ms: retryAfterMs }, {
    'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))),
  });

/** Maps anything thrown to a status and JSON body; unknown errors become 500 M_UNKNOWN. */
export function renderError(err: unknown): { status: number; body: Record<string, unknown>; headers: Record<string, string>; unexpected: boolean } {
  if (err instanceof MatrixError) return { status: err.status, body: err.toJSON(), headers: err.headers, unexpected: false };
  const e = err as { status?: number; expose?: boolean; type?: string; message?: string };
  // Errors raised by koa/raw-body for the request stream itself.
  if (e?.type === 'entity.too.large' || e?.status === 413) {
    return { status: 413, body: { errcode: 'M_TOO_LARGE', error: 'Request body too large' }, headers: {}, unexpected: false };
  }
  if (e?.type === 'request.aborted' || e?.type === 'request.size.invalid' || e?.type === 'encoding.unsupported') {
    return { status: 400, body: { errcode: 'M_BAD_JSON', error: e.message ?? 'Bad request body' }, headers: {}, unexpected: false };
  }
  return { status: 500, body: { errcode: 'M_UNKNOWN', error: 'Internal server error' }, headers: {}, unexpected: true };
}
