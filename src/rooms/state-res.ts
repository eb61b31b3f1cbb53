// State resolution: v1 (room v1), v2 (rooms v2–v11) and v2.1 (room v12).
//
// Spec: rooms/v1 "State resolution"; rooms fragment v2-state-res ("Definitions", "Algorithm",
// "Rejected events"); rooms/v12 "State resolution" (MSC4297: empty initial state for the power
// events pass, conflicted state subgraph in the full conflicted set).
import { createHash } from 'node:crypto';
import { AuthError, checkAuth, powerLevelOf, type AuthStateLookup } from './auth-rules.js';
import { authEventIds, eventStateKey, membershipOf, parseStateKey, stateKey, type PDU, type StateMap } from './event.js';
import { eventIdOf } from './hashing.js';
import type { RoomVersion } from './versions.js';

export interface StateResContext {
  /** Every event referenced by the state sets and their auth chains must be available. */
  getEvent(id: string): PDU | undefined;
  /**
   * Optional: the full auth chain of an event (all events reachable through `auth_events`,
   * excluding the event itself), e.g. from a chain-cover index. Without it the chain is walked
   * through {@link getEvent}.
   */
  authChain?(id: string): Iterable<string>;
  /** Optional: events rejected on receipt; they are not used as auth events in iterative auth checks. */
  isRejected?(id: string): boolean;
}

export class StateResError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateResError';
  }
}

const POWER_LEVELS_KEY = stateKey('m.room.power_levels', '');

/**
 * Resolves a set of room states into one (the state before an event whose `prev_events` lead to
 * these states). Uses the algorithm of the room version.
 */
export function resolveState(version: RoomVersion, stateSets: readonly StateMap[], ctx: StateResContext): StateMap {
  if (stateSets.length === 0) return new Map();
  if (stateSets.length === 1) return new Map(stateSets[0]);
  const r = new Resolver(version, ctx);
  return version.stateRes === 'v1' ? r.resolveV1(stateSets) : r.resolveV2(stateSets, version.stateRes === 'v2.1');
}

/**
 * Power events (v2 "Definitions"): power levels, join rules, and kicks/bans (a `leave` or `ban`
 * membership whose sender is not the target).
 */
export function isPowerEvent(event: PDU): boolean {
  if (typeof event.state_key !== 'string') return false;
  if (event.type === 'm.room.power_levels' || event.type === 'm.room.join_rules') return event.state_key === '';
  if (event.type === 'm.room.member') {
    const m = membershipOf(event);
    return (m === 'leave' || m === 'ban') && event.sender !== event.state_key;
  }
  return false;
}

/** Binary min-heap over a comparator. */
class Heap<T> {
  private items: T[] = [];
  constructor(private readonly less: (a: T, b: T) => boolean) {}
  get size(): number {
    return this.items.length;
  }
  push(item: T): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  pop(): T | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop() as T;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l], a[m])) m = l;
        if (r < a.length && this.less(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

class Resolver {
  /** Ids of create events handed out by ctx.getEvent, so auth checks never re-hash them. */
  private readonly ids = new WeakMap<PDU, string>();
  private readonly cache = new Map<string, PDU>();
  private readonly idOf = (e: PDU): string => this.ids.get(e) ?? eventIdOf(e, this.version);

  constructor(
    private readonly version: RoomVersion,
    private readonly ctx: StateResContext,
  ) {}

  private ev(id: string): PDU {
    let e = this.cache.get(id);
    if (!e) {
      e = this.ctx.getEvent(id);
      if (!e) throw new StateResError(`state resolution needs event ${id}, which is not available`);
      this.cache.set(id, e);
      // The auth rules only ever ask for the id of the create event.
      if (e.type === 'm.room.create' && !this.ids.has(e)) this.ids.set(e, id);
    }
    return e;
  }

  private rejected(id: string): boolean {
    return this.ctx.isRejected?.(id) ?? false;
  }

  /** v12: the create event is implied by the room id rather than listed in auth_events. */
  private createFromRoomId(event: PDU): PDU | undefined {
    if (!this.version.roomIdFromCreateEvent || typeof event.room_id !== 'string') return undefined;
    const e = this.ctx.getEvent('$' + event.room_id.slice(1));
    if (e && !this.ids.has(e)) this.ids.set(e, '$' + event.room_id.slice(1));
    return e;
  }

  /** Lookup over an event's own (non-rejected) auth events. */
  private authEventsLookup(event: PDU): Map<string, PDU> {
    const m = new Map<string, PDU>();
    for (const aid of authEventIds(event)) {
      if (this.rejected(aid)) continue;
      const ae = this.ev(aid);
      const k = eventStateKey(ae);
      if (k !== undefined) m.set(k, ae);
    }
    return m;
  }

  // -------------------------------------------------------------------------------------------
  // v2 / v2.1

  resolveV2(stateSets: readonly StateMap[], v21: boolean): StateMap {
    // Unconflicted state map and conflicted state set.
    const unconflicted: StateMap = new Map();
    const conflicted = new Set<string>();
    const perSetConflicted: string[][] = stateSets.map(() => []);
    const seenKeys = new Set<string>();
    for (const s of stateSets) {
      for (const key of s.keys()) {
        if (seenKeys.has(key)) continue;
        seenKeys.add(key);
        const first = stateSets[0].get(key);
        let same = first !== undefined;
        for (let i = 1; same && i < stateSets.length; i++) same = stateSets[i].get(key) === first;
        if (same) {
          unconflicted.set(key, first as string);
        } else {
          stateSets.forEach((set, i) => {
            const v = set.get(key);
            if (v !== undefined) {
              conflicted.add(v);
              perSetConflicted[i].push(v);
            }
          });
        }
      }
    }
    if (conflicted.size === 0) return unconflicted;

    // Full conflicted set = conflicted state set ∪ auth difference (∪ conflicted subgraph in v2.1).
    const full = new Set<string>(conflicted);
    for (const id of this.authDifference(unconflicted, perSetConflicted)) full.add(id);
    if (v21) for (const id of this.conflictedSubgraph(conflicted)) full.add(id);

    // Step 1: power events and their auth chains within the full conflicted set, in reverse
    // topological power ordering.
    const powerIds = [...full].filter((id) => isPowerEvent(this.ev(id)));
    const sortedPower = this.reverseTopologicalPowerOrder(powerIds, full);

    // Step 2: iterative auth checks from the unconflicted state (v2) or an empty state (v2.1).
    const partial = this.iterativeAuthChecks(sortedPower, v21 ? new Map() : unconflicted);

    // Step 3: the rest, in mainline order of the resolved power levels.
    const picked = new Set(sortedPower);
    const rest = [...full].filter((id) => !picked.has(id));
    const sortedRest = this.mainlineOrder(rest, partial.get(POWER_LEVELS_KEY));

    // Step 4
    const resolved = this.iterativeAuthChecks(sortedRest, partial);

    // Step 5: unconflicted state wins.
    for (const [k, v] of unconflicted) resolved.set(k, v);
    return resolved;
  }

  /** Auth events of an event, fetched. */
  private authIds(id: string): string[] {
    return authEventIds(this.ev(id));
  }

  /** Union of the auth chains of `starts` (excluding `starts` unless reachable), skipping `stop`. */
  private chainUnion(starts: Iterable<string>, stop?: Set<string>): Set<string> {
    const out = new Set<string>();
    if (this.ctx.authChain) {
      for (const s of starts) for (const a of this.ctx.authChain(s)) if (!stop?.has(a)) out.add(a);
      return out;
    }
    const stack: string[] = [];
    for (const s of starts) for (const a of this.authIds(s)) stack.push(a);
    while (stack.length > 0) {
      const id = stack.pop() as string;
      if (out.has(id) || stop?.has(id)) continue;
      out.add(id);
      for (const a of this.authIds(id)) if (!out.has(a)) stack.push(a);
    }
    return out;
  }

  /**
   * Auth difference ∪Cᵢ − ∩Cᵢ. Every Cᵢ contains U, the auth chain of the unconflicted state, so
   * only the chains of each set's conflicted events outside U (Dᵢ) matter: ∪Cᵢ − ∩Cᵢ = ∪Dᵢ − ∩Dᵢ.
   * U is closed under auth_events, so walks stop on reaching it.
   */
  private authDifference(unconflicted: StateMap, perSetConflicted: string[][]): Set<string> {
    const u = this.chainUnion(unconflicted.values());
    const d = perSetConflicted.map((ids) => this.chainUnion(ids, u));
    const out = new Set<string>();
    for (const di of d) {
      for (const id of di) {
        if (out.has(id)) continue;
        if (!d.every((dj) => dj.has(id))) out.add(id);
      }
    }
    return out;
  }

  /**
   * v2.1 conflicted state subgraph: every event on an auth_events path between two conflicted
   * events. An event is on such a path when it is reachable from a conflicted event and a
   * conflicted event is reachable from it. Iterative post-order DFS.
   */
  private conflictedSubgraph(conflicted: Set<string>): Set<string> {
    const reaches = new Map<string, boolean>(); // strict descendant in `conflicted`
    const visiting = new Set<string>();
    type Frame = { id: string; auth: string[]; i: number; acc: boolean };
    for (const root of conflicted) {
      if (reaches.has(root)) continue;
      const stack: Frame[] = [{ id: root, auth: this.authIds(root), i: 0, acc: false }];
      visiting.add(root);
      while (stack.length > 0) {
        const top = stack[stack.length - 1];
        if (top.i < top.auth.length) {
          const a = top.auth[top.i++];
          if (conflicted.has(a)) {
            top.acc = true;
            // `a` is a root of its own walk; no need to descend here.
          } else if (reaches.has(a)) {
            if (reaches.get(a)) top.acc = true;
          } else if (!visiting.has(a)) {
            visiting.add(a);
            stack.push({ id: a, auth: this.authIds(a), i: 0, acc: false });
          }
        } else {
          stack.pop();
          visiting.delete(top.id);
          reaches.set(top.id, top.acc);
          if (stack.length > 0 && top.acc) stack[stack.length - 1].acc = true;
        }
      }
    }
    const out = new Set<string>(conflicted);
    for (const [id, r] of reaches) if (r) out.add(id);
    return out;
  }

  /** Sender power level "when looking at their respective auth_events" (for the power ordering). */
  private senderPowerFromAuthEvents(event: PDU): number {
    const m = this.authEventsLookup(event);
    const lookup: AuthStateLookup = (type, key) => {
      const e = m.get(stateKey(type, key));
      if (e) return e;
      return type === 'm.room.create' && key === '' ? this.createFromRoomId(event) : undefined;
    };
    return powerLevelOf(event.sender, lookup, this.version);
  }

  /**
   * Reverse topological power ordering of the power events plus the members of the full
   * conflicted set in their auth chains: Kahn's algorithm over the auth_events DAG, taking the
   * smallest candidate by (higher sender power level, lower origin_server_ts, lower event_id).
   *
   * As in the deployed implementations (Synapse, ruma), auth chains are walked and edges taken
   * only through events of the full conflicted set.
   */
  private reverseTopologicalPowerOrder(powerIds: string[], full: Set<string>): string[] {
    // graph: event → its auth events within the set.
    const graph = new Map<string, string[]>();
    const stack = [...powerIds];
    while (stack.length > 0) {
      const id = stack.pop() as string;
      if (graph.has(id)) continue;
      const edges: string[] = [];
      for (const a of this.authIds(id)) {
        if (!full.has(a)) continue;
        edges.push(a);
        if (!graph.has(a)) stack.push(a);
      }
      graph.set(id, edges);
    }
    const key = new Map<string, { pl: number; ts: number }>();
    for (const id of graph.keys()) {
      const e = this.ev(id);
      key.set(id, { pl: this.senderPowerFromAuthEvents(e), ts: e.origin_server_ts });
    }
    return kahn(graph, (a, b) => {
      const ka = key.get(a) as { pl: number; ts: number };
      const kb = key.get(b) as { pl: number; ts: number };
      if (ka.pl !== kb.pl) return ka.pl > kb.pl;
      if (ka.ts !== kb.ts) return ka.ts < kb.ts;
      return a < b;
    });
  }

  /** The power levels event among an event's auth events. */
  private plAuthEvent(id: string): string | undefined {
    for (const a of this.authIds(id)) {
      const ae = this.ev(a);
      if (ae.type === 'm.room.power_levels' && ae.state_key === '') return a;
    }
    return undefined;
  }

  /**
   * Mainline ordering based on the power levels event `p0`: by mainline position descending,
   * then origin_server_ts, then event_id.
   */
  private mainlineOrder(ids: string[], p0: string | undefined): string[] {
    const index = new Map<string, number>();
    for (let p = p0, i = 0; p !== undefined; p = this.plAuthEvent(p), i++) {
      if (index.has(p)) break; // defensive: a cycle would be malformed
      index.set(p, i);
    }
    // Position of a power levels chain starting at `p` (memoised; Infinity when it never meets the mainline).
    const memo = new Map<string, number>();
    const positionFrom = (start: string | undefined): number => {
      const path: string[] = [];
      let p = start;
      let result = Infinity;
      while (p !== undefined) {
        const known = index.get(p) ?? memo.get(p);
        if (known !== undefined) {
          result = known;
          break;
        }
        path.push(p);
        p = this.plAuthEvent(p);
        if (p !== undefined && path.includes(p)) break;
      }
      for (const q of path) memo.set(q, result);
      return result;
    };
    const keyed = ids.map((id) => {
      const e = this.ev(id);
      return { id, pos: positionFrom(this.plAuthEvent(id)), ts: e.origin_server_ts };
    });
    keyed.sort((a, b) => (a.pos !== b.pos ? (a.pos > b.pos ? -1 : 1) : a.ts !== b.ts ? a.ts - b.ts : compareStrings(a.id, b.id)));
    return keyed.map((k) => k.id);
  }

  /**
   * Iterative auth checks: apply each event that passes the auth rules against the state so far,
   * falling back to the event's (non-rejected) auth events for keys missing from that state.
   */
  private iterativeAuthChecks(ids: string[], base: StateMap): StateMap {
    const state: StateMap = new Map(base);
    for (const id of ids) {
      const event = this.ev(id);
      const key = eventStateKey(event);
      if (key === undefined) continue;
      const own = this.authEventsLookup(event);
      const lookup: AuthStateLookup = (type, sk) => {
        const k = stateKey(type, sk);
        const sid = state.get(k);
        if (sid !== undefined && !this.rejected(sid)) return this.ev(sid);
        const fromAuth = own.get(k);
        if (fromAuth) return fromAuth;
        return type === 'm.room.create' && sk === '' ? this.createFromRoomId(event) : undefined;
      };
      try {
        checkAuth(event, lookup, this.version, { eventIdOf: this.idOf });
        state.set(key, id);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
      }
    }
    return state;
  }

  // -------------------------------------------------------------------------------------------
  // v1 (rooms/v1 "State resolution")

  resolveV1(stateSets: readonly StateMap[]): StateMap {
    // A conflict is a key with different event ids in different states; keys missing from some
    // states are not conflicts.
    const resolved: StateMap = new Map();
    const conflicts = new Map<string, string[]>();
    for (const s of stateSets) {
      for (const [key, id] of s) {
        const known = resolved.get(key);
        const list = conflicts.get(key);
        if (list) {
          if (!list.includes(id)) list.push(id);
        } else if (known === undefined) {
          resolved.set(key, id);
        } else if (known !== id) {
          resolved.delete(key);
          conflicts.set(key, [known, id]);
        }
      }
    }
    if (conflicts.size === 0) return resolved;

    const lookup: AuthStateLookup = (type, sk) => {
      const id = resolved.get(stateKey(type, sk));
      return id === undefined ? undefined : this.ev(id);
    };
    const passes = (id: string): boolean => {
      try {
        checkAuth(this.ev(id), lookup, this.version, { eventIdOf: this.idOf });
        return true;
      } catch (err) {
        if (err instanceof AuthError) return false;
        throw err;
      }
    };
    const sha1 = (id: string) => createHash('sha1').update(id).digest('hex');
    // Ascending depth, then descending sha1(event_id).
    const ascending = (ids: string[]) =>
      ids
        .map((id) => ({ id, depth: this.ev(id).depth, h: sha1(id) }))
        .sort((a, b) => (a.depth !== b.depth ? a.depth - b.depth : compareStrings(b.h, a.h)))
        .map((x) => x.id);

    // Auth-relevant keys: the first event in the ordered list, then each next one while it passes
    // auth against R holding the previous one.
    const resolveAuthKey = (key: string, ids: string[]) => {
      const ordered = ascending(ids);
      let chosen = ordered[0];
      for (const id of ordered.slice(1)) {
        resolved.set(key, chosen);
        if (!passes(id)) break;
        chosen = id;
      }
      resolved.set(key, chosen);
    };
    const typeOf = (key: string) => parseStateKey(key)[0];
    const order = ['m.room.power_levels', 'm.room.join_rules', 'm.room.member'];
    for (const type of order) {
      for (const [key, ids] of conflicts) if (typeOf(key) === type) resolveAuthKey(key, ids);
    }
    // Everything else: the highest depth, lowest sha1(event_id) event that passes auth in R.
    // When none passes, the last candidate is kept (as the reference implementation does).
    for (const [key, ids] of conflicts) {
      if (order.includes(typeOf(key))) continue;
      const ordered = ascending(ids).reverse();
      let chosen = ordered[ordered.length - 1];
      for (const id of ordered) {
        if (passes(id)) {
          chosen = id;
          break;
        }
      }
      resolved.set(key, chosen);
    }
    return resolved;
  }
}

/** Kahn's algorithm choosing the smallest available vertex; `graph` maps vertex → prerequisites. */
function kahn(graph: Map<string, string[]>, less: (a: string, b: string) => boolean): string[] {
  const remaining = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const [v, prereqs] of graph) {
    remaining.set(v, prereqs.length);
    for (const p of prereqs) {
      let d = dependents.get(p);
      if (!d) dependents.set(p, (d = []));
      d.push(v);
    }
  }
  const heap = new Heap<string>(less);
  for (const [v, n] of remaining) if (n === 0) heap.push(v);
  const out: string[] = [];
  while (heap.size > 0) {
    const v = heap.pop() as string;
    out.push(v);
    for (const d of dependents.get(v) ?? []) {
      const n = (remaining.get(d) as number) - 1;
      remaining.set(d, n);
      if (n === 0) heap.push(d);
    }
  }
  if (out.length !== graph.size) throw new StateResError('auth_events graph has a cycle');
  return out;
}
