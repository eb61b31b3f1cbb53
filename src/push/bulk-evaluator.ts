// Evaluates every new event against the push rules of each local user it may notify, inside the
// event's transaction, and records a push action per notifying user (client-server spec, "Push
// Notifications": the server computes the actions; /sync's unread counts and GET /notifications
// read them; a pusher will later deliver them).
//
// Per event: one query for the room's joined members (membership before the event: room_members is
// updated after the hooks run), cached rulesets (one position read), the power levels from the state
// cache, one batched insert. The event is flattened once and shared by every user's evaluation.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { EventsStore, MemberRow } from '../storage/events-store.js';
import type { PushActionRow, PushStore } from '../storage/push-store.js';
import type { PersistHooks } from '../rooms/persist.js';
import type { RoomData, RoomInfo, StoredEvent } from '../rooms/room-data.js';
import { stateKey, isPlainObject, type StateMap } from '../rooms/event.js';
import { powerLevelOf } from '../rooms/auth-rules.js';
import { redactsOf } from '../rooms/hashing.js';
import { evaluatePushRules, flattenEvent, type PushEvaluation } from './evaluator.js';
import type { PushRulesService } from './push-rules-service.js';

interface Candidate {
  userId: string;
  displayName: string | null;
}

/** The thread an event belongs to for notification counts: its m.thread root, else null (main). */
export function threadIdOf(content: Record<string, unknown> | undefined): string | null {
  const rel = content?.['m.relates_to'];
  if (!isPlainObject(rel) || rel.rel_type !== 'm.thread' || typeof rel.event_id !== 'string') return null;
  return rel.event_id;
}

export class BulkPushEvaluator implements PersistHooks {
  private readonly localSuffix: string;

  constructor(
    private readonly data: RoomData,
    private readonly events: EventsStore,
    private readonly store: PushStore,
    private readonly rules: PushRulesService,
    serverName: string,
    private readonly logger?: Logger,
  ) {
    this.localSuffix = `:${serverName}`;
  }

  private isLocal(userId: string): boolean {
    return userId.endsWith(this.localSuffix);
  }

  async inTransaction(trx: Knex, ev: StoredEvent, room: RoomInfo, stateBefore: StateMap): Promise<void> {
    if (ev.outlier || ev.softFailed || ev.rejected) return;
    const pdu = ev.pdu;
    if (pdu.type === 'm.room.redaction') {
      const target = redactsOf(pdu, room.version);
      if (target) await this.store.deleteActionsOfRedacted(target, ev.eventId, trx);
    }
    if (stateBefore.size === 0) return; // the create event: nobody to notify yet

    const joined = await this.data.joinedMembers(room, trx, pdu.type === 'm.room.member');
    const candidates = this.candidates(ev, joined);
    if (!candidates.length) return;

    const rulesets = await this.rules.compiledFor(candidates.map((c) => c.userId), trx);
    const plEvents = await this.data.stateEvents(stateBefore, [stateKey('m.room.power_levels', ''), stateKey('m.room.create', '')], trx);
    const lookup = (t: string, k: string) => plEvents.get(stateKey(t, k))?.pdu;
    const senderPowerLevel = powerLevelOf(pdu.sender, lookup, room.version);
    const notifications = lookup('m.room.power_levels', '')?.content?.notifications;
    const notificationPowerLevels = isPlainObject(notifications) ? (notifications as Record<string, number>) : undefined;

    // What push rules see: the client form of the event (without hashes, signatures, DAG fields).
    const clientForm: Record<string, unknown> = {
      type: pdu.type, content: pdu.content ?? {}, sender: pdu.sender, room_id: room.roomId, event_id: ev.eventId,
      origin_server_ts: pdu.origin_server_ts,
    };
    if (typeof pdu.state_key === 'string') clientForm.state_key = pdu.state_key;
    const flat = flattenEvent(clientForm);
    const threadId = threadIdOf(pdu.content);
    const ts = Date.now();
    const actionsJson = new Map<PushEvaluation, string>();
    const rows: PushActionRow[] = [];
    for (const c of candidates) {
      const ruleset = rulesets.get(c.userId);
      if (!ruleset) continue;
      let result: PushEvaluation;
      try {
        result = evaluatePushRules(ruleset, flat, {
          userId: c.userId, displayName: c.displayName, roomMemberCount: joined.length, senderPowerLevel, notificationPowerLevels,
        });
      } catch (err) {
        // One user's broken rules must not stop the event (or other users' notifications).
        this.logger?.warn({ err, userId: c.userId, eventId: ev.eventId }, 'push rule evaluation failed');
        continue;
      }
      if (!result.notify) continue;
      let json = actionsJson.get(result);
      if (json === undefined) actionsJson.set(result, (json = JSON.stringify(result.actions)));
      rows.push({
        user_id: c.userId, event_nid: ev.nid, room_nid: room.nid, notify: true, highlight: result.highlight,
        thread_id: threadId, actions: json, ts,
      });
    }
    if (rows.length) await this.store.insertActions(rows, trx);
  }

  /** Local joined users other than the sender, plus the local target of an invite. */
  private candidates(ev: StoredEvent, joined: readonly MemberRow[]): Candidate[] {
    const sender = ev.pdu.sender;
    const out: Candidate[] = [];
    for (const m of joined) {
      if (m.user_id !== sender && this.isLocal(m.user_id)) out.push({ userId: m.user_id, displayName: m.displayname });
    }
    const pdu = ev.pdu;
    if (pdu.type === 'm.room.member' && pdu.content?.membership === 'invite' && typeof pdu.state_key === 'string'
      && pdu.state_key !== sender && this.isLocal(pdu.state_key) && !out.some((c) => c.userId === pdu.state_key)) {
      out.push({ userId: pdu.state_key, displayName: typeof pdu.content.displayname === 'string' ? pdu.content.displayname : null });
    }
    return out;
  }
}
