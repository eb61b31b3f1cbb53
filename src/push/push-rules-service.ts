// The push rules API's service: per-user rules and default-rule overrides (stored whole, one row per
// user), the merged ruleset clients see (GET /pushrules/, the m.push_rules account data event), and
// compiled rulesets for evaluation at persist time, cached per user.
//
// Cache consistency across processes: the cache remembers the `push_rules` stream position it is
// valid up to. Before use it reads the current position (one primary-key read); when that moved, it
// drops the users whose rows changed after the old position. Positions commit in order (see
// StreamsStore.nextPosition), so every change at or below the position read has been seen.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { MatrixError, notFound } from '../http/errors.js';
import type { PushStore, PushRulesRow } from '../storage/push-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { Notifier } from '../sync/notifier.js';
import { Lru } from '../rooms/lru.js';
import { defaultRuleset, type DefaultRulesetOptions } from './default-rules.js';
import { compileRuleset, type CompiledRuleset } from './evaluator.js';
import {
  findRule,
  isPushRuleKind,
  isServerDefaultRuleId,
  mergeRuleset,
  upsertUserRule,
  validateActions,
  validateRuleForKind,
  type DefaultRuleOverrides,
  type InsertOptions,
  type PushAction,
  type PushRule,
  type PushRuleError,
  type PushRuleKind,
  type PushRulesContent,
  type UserRules,
  type ValidationResult,
} from './rules.js';

export interface PushRulesOptions extends DefaultRulesetOptions {
  /** Users whose rulesets stay cached (stored rules + compiled ruleset: ~2 KB a user). */
  cacheSize?: number;
}

interface CachedRuleset {
  stored: StoredRules;
  compiled: CompiledRuleset;
}

interface StoredRules {
  rules: UserRules;
  overrides: DefaultRuleOverrides;
}

function parseJsonObject<T>(text: string | undefined): T {
  if (!text) return {} as T;
  try {
    const v = JSON.parse(text);
    return (typeof v === 'object' && v !== null && !Array.isArray(v) ? v : {}) as T;
  } catch {
    return {} as T;
  }
}

const NOTHING_STORED: StoredRules = Object.freeze({ rules: Object.freeze({}), overrides: Object.freeze({}) }) as StoredRules;

function parseRow(row: PushRulesRow | undefined): StoredRules {
  if (!row) return NOTHING_STORED;
  return { rules: parseJsonObject<UserRules>(row.rules), overrides: parseJsonObject<DefaultRuleOverrides>(row.overrides) };
}

export function pushRuleError(e: PushRuleError): MatrixError {
  return new MatrixError(e.status, e.errcode, e.error);
}

function unwrap<T>(r: ValidationResult<T>): T {
  if (!r.ok) throw pushRuleError(r);
  return r.value;
}

function kindOf(kind: string): PushRuleKind {
  if (!isPushRuleKind(kind)) throw new MatrixError(400, 'M_INVALID_PARAM', `Unknown push rule kind: ${kind}`);
  return kind;
}

const ruleNotFound = () => notFound('The push rule was not found.');

export class PushRulesService {
  private readonly cache: Lru<string, CachedRuleset>;
  /** The push_rules position the cache is consistent with; -1: not synchronised yet. */
  private validUpTo = -1;
  private refreshing: Promise<void> | null = null;

  constructor(
    private readonly db: Knex,
    private readonly store: PushStore,
    private readonly streams: StreamsStore,
    private readonly notifier: Notifier,
    private readonly options: PushRulesOptions = {},
    private readonly logger?: Logger,
  ) {
    this.cache = new Lru(options.cacheSize ?? 20_000);
  }

  // ------------------------------------------------------------------------------------------
  // Reads (for /sync, GET /pushrules and evaluation).

  /**
   * The user's full ruleset as GET /pushrules/ shows it (also the content of the m.push_rules account
   * data event). A fresh object each call.
   */
  async rulesetFor(userId: string, q: Knex = this.db): Promise<PushRulesContent> {
    const { stored } = (await this.cachedFor([userId], q)).get(userId)!;
    return mergeRuleset(userId, stored.rules, stored.overrides, this.options);
  }

  /** Whether the user's push rules changed in (sincePos, upTo] (positions of the push_rules stream). */
  async pushRulesChangedSince(userId: string, sincePos: number, upTo: number, q: Knex = this.db): Promise<boolean> {
    return this.store.rulesChangedBetween(userId, sincePos, upTo, q);
  }

  /** Compiled rulesets of several users, for evaluation. Pass the transaction when inside one. */
  async compiledFor(userIds: readonly string[], q: Knex = this.db): Promise<Map<string, CompiledRuleset>> {
    const cached = await this.cachedFor(userIds, q, true);
    const out = new Map<string, CompiledRuleset>();
    for (const [u, c] of cached) out.set(u, c.compiled);
    return out;
  }

  private async cachedFor(userIds: readonly string[], q: Knex, hotPath = false): Promise<Map<string, CachedRuleset>> {
    await this.refresh(q, hotPath);
    const out = new Map<string, CachedRuleset>();
    const missing: string[] = [];
    for (const u of userIds) {
      const c = this.cache.get(u);
      if (c) out.set(u, c);
      else missing.push(u);
    }
    if (missing.length) {
      const rows = new Map((await this.store.userRulesMany(missing, q)).map((r) => [r.user_id, r]));
      for (const u of missing) {
        const c = this.build(u, parseRow(rows.get(u)));
        this.cache.set(u, c);
        out.set(u, c);
      }
    }
    return out;
  }

  private build(userId: string, stored: StoredRules): CachedRuleset {
    return { stored, compiled: compileRuleset(mergeRuleset(userId, stored.rules, stored.overrides, this.options)) };
  }

  /** Drops cached rulesets changed by any process since the cache was last synchronised. */
  /**
   * The newest push_rules position this process has heard of (local commits and the Redis bus).
   * When it equals what the cache reflects, nothing changed and no query is needed.
   */
  knownPosition: (() => number) | null = null;

  private async refresh(q: Knex, hotPath = false): Promise<void> {
    // Event persistence trusts the notifier's position (changes by other processes arrive over the
    // Redis bus); reads for clients check the database.
    if (hotPath && this.knownPosition && this.validUpTo >= 0 && this.knownPosition() <= this.validUpTo) return;
    // Concurrent callers outside transactions share one refresh; callers with their own connection
    // (a transaction) must not wait on a query that runs on another, so they refresh themselves.
    if (q === this.db) {
      this.refreshing ??= this.doRefresh(q).finally(() => { this.refreshing = null; });
      return this.refreshing;
    }
    return this.doRefresh(q);
  }

  private async doRefresh(q: Knex): Promise<void> {
    const pos = await this.store.pushRulesPosition(q);
    if (pos === this.validUpTo) return;
    if (this.validUpTo < 0 || pos < this.validUpTo) {
      this.cache.clear();
    } else {
      for (const u of await this.store.usersChangedAfter(this.validUpTo, q)) this.cache.delete(u);
    }
    this.validUpTo = Math.max(this.validUpTo, pos);
  }

  // ------------------------------------------------------------------------------------------
  // The push rules API.

  async getRule(userId: string, kind: string, ruleId: string): Promise<PushRule> {
    const rule = findRule(await this.rulesetFor(userId), kindOf(kind), ruleId);
    if (!rule) throw ruleNotFound();
    return rule;
  }

  /** PUT /pushrules/global/{kind}/{ruleId}: creates or replaces a user-defined rule. */
  async putRule(userId: string, kind: string, ruleId: string, body: unknown, position: InsertOptions = {}): Promise<void> {
    const rule = unwrap(validateRuleForKind(kind, ruleId, body));
    const k = kind as PushRuleKind;
    await this.mutate(userId, (s) => {
      s.rules[k] = unwrap(upsertUserRule(s.rules[k] ?? [], rule, position));
    });
  }

  async deleteRule(userId: string, kind: string, ruleId: string): Promise<void> {
    const k = kindOf(kind);
    if (isServerDefaultRuleId(ruleId)) {
      if (this.defaultRuleExists(userId, k, ruleId)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Cannot delete a server-default push rule');
      throw ruleNotFound();
    }
    await this.mutate(userId, (s) => {
      const list = s.rules[k] ?? [];
      if (!list.some((r) => r.rule_id === ruleId)) throw ruleNotFound();
      s.rules[k] = list.filter((r) => r.rule_id !== ruleId);
    });
  }

  async setEnabled(userId: string, kind: string, ruleId: string, enabled: boolean): Promise<void> {
    const k = kindOf(kind);
    await this.mutate(userId, (s) => {
      if (isServerDefaultRuleId(ruleId)) {
        if (!this.defaultRuleExists(userId, k, ruleId)) throw ruleNotFound();
        const byKind = (s.overrides[k] ??= {});
        byKind[ruleId] = { ...byKind[ruleId], enabled };
        return;
      }
      const rule = (s.rules[k] ?? []).find((r) => r.rule_id === ruleId);
      if (!rule) throw ruleNotFound();
      rule.enabled = enabled;
    });
  }

  async setActions(userId: string, kind: string, ruleId: string, actionsIn: unknown): Promise<void> {
    const k = kindOf(kind);
    const actions: PushAction[] = unwrap(validateActions(actionsIn));
    await this.mutate(userId, (s) => {
      if (isServerDefaultRuleId(ruleId)) {
        if (!this.defaultRuleExists(userId, k, ruleId)) throw ruleNotFound();
        const byKind = (s.overrides[k] ??= {});
        byKind[ruleId] = { ...byKind[ruleId], actions };
        return;
      }
      const rule = (s.rules[k] ?? []).find((r) => r.rule_id === ruleId);
      if (!rule) throw ruleNotFound();
      rule.actions = actions;
    });
  }

  private defaultRuleExists(userId: string, kind: PushRuleKind, ruleId: string): boolean {
    return !!findRule(defaultRuleset(userId, this.options), kind, ruleId);
  }

  /**
   * Read-modify-write of one user's stored rules under the row's lock, at a new push_rules stream
   * position; then the cache entry is dropped and the user's /sync woken (m.push_rules).
   */
  private async mutate(userId: string, change: (s: StoredRules) => void): Promise<number> {
    const position = await this.db.transaction(async (trx) => {
      await this.store.lockUserRules(userId, trx);
      const row = await this.store.userRules(userId, trx);
      const s: StoredRules = { rules: parseJsonObject<UserRules>(row?.rules), overrides: parseJsonObject<DefaultRuleOverrides>(row?.overrides) };
      change(s);
      const pos = await this.streams.nextPosition(trx, 'push_rules');
      await this.store.writeUserRules(userId, s.rules, s.overrides, pos, trx);
      return pos;
    });
    this.cache.delete(userId);
    this.logger?.debug({ userId, position }, 'push rules changed');
    this.notifier.notify({ stream: 'push_rules', position, userIds: [userId] });
    return position;
  }
}
