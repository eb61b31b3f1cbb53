// Token-bucket rate limiting, per key (user id or client IP), in process memory.
import type { Middleware } from 'koa';
import { limitExceeded } from './errors.js';

export interface RateRule { per_second: number; burst: number }

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly rule: RateRule) {}

  /** Takes one token; returns 0 when allowed, else the milliseconds until one is available. */
  take(key: string, now = Date.now()): number {
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size > 50_000) this.sweep(now);
      b = { tokens: this.rule.burst, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.rule.burst, b.tokens + ((now - b.at) / 1000) * this.rule.per_second);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - b.tokens) / this.rule.per_second) * 1000);
  }

  private sweep(now: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.rule.per_second >= this.rule.burst) this.buckets.delete(k);
    }
  }
}

export interface RateLimitOptions {
  enabled: boolean;
  exempt: ReadonlySet<string>;
  /** Key by client IP even when a user is authenticated. */
  byIp?: boolean;
}

/** Limits by the authenticated user when there is one, else by client IP. */
export function rateLimit(limiter: RateLimiter, opts: RateLimitOptions): Middleware {
  return async (ctx, next) => {
    if (opts.enabled) {
      const userId = opts.byIp ? undefined : (ctx.state.requester as { userId?: string; isAdmin?: boolean } | undefined)?.userId;
      if (!userId || !opts.exempt.has(userId)) {
        const wait = limiter.take(userId ?? `ip:${ctx.ip}`);
        if (wait > 0) throw limitExceeded(wait);
      }
    }
    await next();
  };
}
