import pino, { type Logger } from 'pino';

/** Structured JSON logs; anything that looks like a credential is censored. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    redact: {
      paths: ['password', '*.password', 'access_token', '*.access_token', 'refresh_token', '*.refresh_token', 'headers.authorization', 'req.headers.authorization', 'token', '*.token'],
      censor: '[redacted]',
    },
  });
}
