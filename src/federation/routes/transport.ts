// Federation transport routes: the implementation version and the notary key query endpoints
// (spec "Querying Keys Through Another Server").
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { RouteRegistrar } from '../../http/app.js';
import { validateBody, queryInt } from '../../http/validate.js';
import type { Services } from '../../services.js';
import { SERVER_SOFTWARE, SERVER_VERSION } from '../version.js';

/** Servers one POST /_matrix/key/v2/query may ask about; each may cost us an outgoing fetch. */
const MAX_SERVERS_PER_QUERY = 100;

interface KeyQueryBody { server_keys: Record<string, Record<string, { minimum_valid_until_ts?: number }>> }

const keyQuerySchema = {
  type: 'object',
  required: ['server_keys'],
  properties: {
    server_keys: {
      type: 'object',
      additionalProperties: {
        type: 'object',
        additionalProperties: {
          type: 'object',
          properties: { minimum_valid_until_ts: { type: 'integer' } },
        },
      },
    },
  },
};

/** Mounted on the 'federation' API. */
export function federationTransportRoutes(_s: Services): RouteRegistrar {
  return (r: Router) => {
    // GET /_matrix/federation/v1/version
    r.get('/_matrix/federation/v1/version', (ctx) => {
      ctx.body = { server: { name: SERVER_SOFTWARE, version: SERVER_VERSION } };
    });
  };
}

/** Mounted on the 'keys' API (which every federation listener serves too). */
export function keyQueryRoutes(s: Services): RouteRegistrar {
  const answer = async (servers: [string, string[], number][]) => {
    const lists = await Promise.all(servers.map(([name, keyIds, minimumValidUntilTs]) => s.keyRing.notaryResponses(name, { keyIds, minimumValidUntilTs })));
    return { server_keys: lists.flat().map((json) => s.serverKeys.sign(json)) };
  };

  return (r: Router) => {
    // GET /_matrix/key/v2/query/{serverName}
    const getQuery = async (ctx: Context & { params: Record<string, string> }) => {
      const min = queryInt(ctx.query, 'minimum_valid_until_ts', { def: Date.now() })!;
      const keyIds = ctx.params.keyId ? [ctx.params.keyId] : [];
      ctx.body = await answer([[ctx.params.serverName, keyIds, min]]);
    };
    r.get('/_matrix/key/v2/query/:serverName', getQuery);
    // The deprecated form with a key id; the notary may return other keys as well.
    r.get('/_matrix/key/v2/query/:serverName/:keyId', getQuery);

    // POST /_matrix/key/v2/query
    r.post('/_matrix/key/v2/query', validateBody<KeyQueryBody>(keyQuerySchema), async (ctx) => {
      const body = ctx.request.body as KeyQueryBody;
      const now = Date.now();
      const servers = Object.entries(body.server_keys).slice(0, MAX_SERVERS_PER_QUERY).map(([name, criteria]): [string, string[], number] => {
        const mins = Object.values(criteria).map((c) => c.minimum_valid_until_ts ?? now);
        return [name, Object.keys(criteria), mins.length ? Math.max(...mins) : now];
      });
      ctx.body = await answer(servers);
    });
  };
}
