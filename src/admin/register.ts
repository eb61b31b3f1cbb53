// Shared-secret registration, the protocol of Synapse's /_synapse/admin/v1/register, so that
// register_new_matrix_user and synadm can create users: GET a nonce, then POST with an HMAC-SHA1 of
// nonce \0 username \0 password \0 admin|notadmin [\0 user_type] keyed with the shared secret.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { MatrixError, forbidden } from '../http/errors.js';
import { validateBody } from '../http/validate.js';
import { SharedSecretRegisterBody } from '../client-api/account.schema.js';

const NONCE_LIFETIME_MS = 60_000;

export function sharedSecretMac(secret: string, b: { nonce: string; username: string; password: string; admin?: boolean; user_type?: string | null }): string {
  const h = createHmac('sha1', secret);
  h.update(b.nonce).update('\x00').update(b.username).update('\x00').update(b.password).update('\x00').update(b.admin ? 'admin' : 'notadmin');
  if (b.user_type) h.update('\x00').update(b.user_type);
  return h.digest('hex');
}

export function sharedSecretRegisterRoutes(s: Services) {
  const secret = () => {
    const v = s.config.registration.shared_secret;
    if (!v) throw new MatrixError(400, 'M_UNKNOWN', 'Shared secret registration is not enabled');
    return v;
  };
  return (r: Router) => {
    // GET /_synapse/admin/v1/register
    r.get('/_synapse/admin/v1/register', async (ctx) => {
      secret();
      const nonce = randomBytes(16).toString('hex');
      await s.stores.users.insertNonce(nonce, Date.now());
      ctx.body = { nonce };
    });

    // POST /_synapse/admin/v1/register
    r.post('/_synapse/admin/v1/register', validateBody(SharedSecretRegisterBody), async (ctx) => {
      const key = secret();
      const b = ctx.request.body as { nonce: string; username: string; password: string; admin?: boolean; user_type?: string | null; displayname?: string; mac: string };
      if (!(await s.stores.users.takeNonce(b.nonce, Date.now() - NONCE_LIFETIME_MS))) throw new MatrixError(400, 'M_UNKNOWN', 'Unrecognised nonce');
      const want = Buffer.from(sharedSecretMac(key, b), 'hex');
      const got = Buffer.from(/^[0-9a-fA-F]+$/.test(b.mac) ? b.mac : '', 'hex');
      if (want.length !== got.length || !timingSafeEqual(want, got)) throw forbidden('HMAC incorrect');
      const userId = await s.accounts.register({ localpart: b.username, password: b.password, admin: !!b.admin, displayname: b.displayname ?? null });
      const login = await s.accounts.login(userId, { ip: ctx.ip, userAgent: ctx.get('user-agent') });
      s.logger.info({ userId, admin: !!b.admin }, 'registered user with the shared secret');
      ctx.body = { ...login, home_server: s.config.server_name };
    });
  };
}
