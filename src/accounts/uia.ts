// User-interactive authentication (spec: "User-Interactive Authentication API").
import { MatrixError } from '../http/errors.js';
import type { UsersStore } from '../storage/users-store.js';
import type { Accounts } from './accounts.js';
import { randomString } from './ids.js';

export type Stage = 'm.login.password' | 'm.login.dummy' | 'm.login.registration_token';

export interface UiaOptions {
  flows: Stage[][];
  /** The authenticated user the stages must prove to be (absent for registration). */
  userId?: string;
  /** The request URI a session is bound to: a session cannot be reused for another operation. */
  uri: string;
}

interface AuthDict {
  type?: string;
  session?: string;
  password?: string;
  identifier?: { type?: string; user?: string };
  user?: string;
  token?: string;
}

export interface UiaResult { completed: Stage[]; data: Record<string, unknown> }

/** The 401 answer of an incomplete UIA: its body is the flows, not an ordinary error. */
export class UiaChallenge extends MatrixError {
  constructor(readonly body: Record<string, unknown>) {
    super(401, (body.errcode as string) ?? 'M_FORBIDDEN', (body.error as string) ?? 'Authentication required');
  }

  override toJSON(): Record<string, unknown> {
    return this.body;
  }
}

const SESSION_LIFETIME_MS = 30 * 60_000;

export class Uia {
  constructor(private readonly users: UsersStore, private readonly accounts: Accounts) {}

  private challenge(opts: UiaOptions, session: string, completed: string[], error?: MatrixError): MatrixError {
    const body: Record<string, unknown> = {
      flows: opts.flows.map((stages) => ({ stages })),
      params: {},
      session,
      completed,
    };
    if (error) Object.assign(body, { errcode: error.errcode, error: error.message });
    return new UiaChallenge(body);
  }

  /**
   * Runs one step of UIA with the request's `auth` dict. Returns when a flow is complete; otherwise
   * throws the 401 challenge (with `completed`, and the stage's error when it failed).
   */
  async check(auth: AuthDict | undefined, opts: UiaOptions): Promise<UiaResult> {
    const now = Date.now();
    if (!auth || typeof auth !== 'object') {
      const session = randomString(24);
      await this.users.deleteUiaSessionsBefore(now - SESSION_LIFETIME_MS);
      await this.users.insertUiaSession({ session_id: session, user_id: opts.userId ?? null, uri: opts.uri, completed: '[]', data: '{}', created_ts: now });
      throw this.challenge(opts, session, []);
    }
    let sessionId = auth.session;
    let row = sessionId ? await this.users.uiaSession(sessionId) : undefined;
    if (sessionId && (!row || Number(row.created_ts) < now - SESSION_LIFETIME_MS)) {
      throw new MatrixError(400, 'M_UNKNOWN', 'Unknown or expired UIA session');
    }
    if (row && (row.uri !== opts.uri || (row.user_id ?? undefined) !== opts.userId)) {
      throw new MatrixError(403, 'M_FORBIDDEN', 'UIA session belongs to another operation');
    }
    if (!row) {
      // Clients may send the first stage without a session (e.g. a password re-auth): make one.
      sessionId = randomString(24);
      row = { session_id: sessionId, user_id: opts.userId ?? null, uri: opts.uri, completed: '[]', data: '{}', created_ts: now };
      await this.users.insertUiaSession(row);
    }
    const completed: Stage[] = JSON.parse(row.completed);
    const data: Record<string, unknown> = JSON.parse(row.data);

    if (auth.type) {
      const allowed = new Set(opts.flows.flat());
      if (!allowed.has(auth.type as Stage)) {
        throw this.challenge(opts, sessionId!, completed, new MatrixError(400, 'M_UNRECOGNIZED', `Unsupported auth type ${auth.type}`));
      }
      const stageError = await this.runStage(auth.type as Stage, auth, opts, data);
      if (stageError) throw this.challenge(opts, sessionId!, completed, stageError);
      if (!completed.includes(auth.type as Stage)) completed.push(auth.type as Stage);
      await this.users.updateUiaSession(sessionId!, { completed: JSON.stringify(completed), data: JSON.stringify(data) });
    }

    const done = opts.flows.some((flow) => flow.every((s) => completed.includes(s)));
    if (!done) throw this.challenge(opts, sessionId!, completed);
    await this.users.deleteUiaSession(sessionId!);
    return { completed, data };
  }

  private async runStage(stage: Stage, auth: AuthDict, opts: UiaOptions, data: Record<string, unknown>): Promise<MatrixError | null> {
    switch (stage) {
      case 'm.login.dummy':
        return null;
      case 'm.login.password': {
        const who = auth.identifier?.type === 'm.id.user' ? auth.identifier.user : auth.user;
        if (typeof who !== 'string' || typeof auth.password !== 'string') {
          return new MatrixError(400, 'M_MISSING_PARAM', 'Password auth needs identifier and password');
        }
        const userId = this.accounts.resolveUser(who);
        if (opts.userId && userId !== opts.userId) return new MatrixError(403, 'M_FORBIDDEN', 'Wrong user for this session');
        const ok = await this.accounts.checkPassword(userId, auth.password);
        if (!ok) return new MatrixError(403, 'M_FORBIDDEN', 'Invalid password');
        data.userId = ok;
        return null;
      }
      case 'm.login.registration_token': {
        if (typeof auth.token !== 'string') return new MatrixError(400, 'M_MISSING_PARAM', 'Missing registration token');
        if (data.registrationToken === auth.token) return null;
        if (!(await this.accounts.registrationTokenValid(auth.token))) return new MatrixError(401, 'M_FORBIDDEN', 'Invalid registration token');
        data.registrationToken = auth.token;
        return null;
      }
    }
  }
}
