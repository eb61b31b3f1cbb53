// Federation queries that read no room history: the published room directory ("Public Room
// Directory"), space hierarchies ("Spaces") and OpenID userinfo ("OpenID"). All but userinfo need
// X-Matrix authentication; userinfo is called by third parties holding a user's OpenID token.
import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { MatrixError, forbidden } from '../../http/errors.js';
import { queryBool, queryInt, queryString } from '../../http/validate.js';
import type { Accounts } from '../../accounts/accounts.js';
import type { RoomData } from '../../rooms/room-data.js';
import type { PublicRoomsQuery, RoomDirectory } from '../../rooms/room-directory.js';
import type { SpaceHierarchy } from '../../rooms/space-hierarchy.js';
import { PublicRoomsBody } from '../../client-api/directory.schema.js';
import { serverAllowedByAcl } from '../acl.js';
import { validateServerBody } from '../x-matrix.js';

export interface FederationQueryDeps {
  serverName: string;
  auth: Middleware;
  data: RoomData;
  directory: RoomDirectory;
  hierarchy: SpaceHierarchy;
  accounts: Accounts;
}

const origin = (ctx: Context) => ctx.state.origin as string;

export function federationQueryRoutes(d: FederationQueryDeps) {
  /** Only our own directory: the `server` of the client API has no place here. */
  const localRooms = (q: PublicRoomsQuery) => d.directory.publicRooms({ ...q, server: d.serverName });

  return (r: Router) => {
    // GET /_matrix/federation/v1/publicRooms (limit 0 or absent: no limit)
    r.get('/_matrix/federation/v1/publicRooms', d.auth, async (ctx) => {
      const limit = queryInt(ctx.query, 'limit', { min: 0 });
      const thirdParty = queryString(ctx.query, 'third_party_instance_id');
      ctx.body = await localRooms({
        limit: limit || undefined,
        since: queryString(ctx.query, 'since'),
        include_all_networks: queryBool(ctx.query, 'include_all_networks'),
        ...(thirdParty !== undefined ? { third_party_instance_id: thirdParty } : {}),
      });
    });

    // POST /_matrix/federation/v1/publicRooms
    r.post('/_matrix/federation/v1/publicRooms', d.auth, validateServerBody(PublicRoomsBody), async (ctx) => {
      const { limit, ...rest } = ctx.request.body as PublicRoomsQuery;
      ctx.body = await localRooms({ ...rest, limit: limit || undefined });
    });

    // GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=
    r.get('/_matrix/federation/v1/hierarchy/:roomId', d.auth, async (ctx) => {
      const roomId = ctx.params.roomId;
      const room = await d.data.room(roomId);
      if (room && !(await serverAllowedByAcl(d.data, await d.data.currentState(room), origin(ctx)))) throw forbidden('Server denied by the room ACL');
      ctx.body = await d.hierarchy.forServer(origin(ctx), roomId, queryBool(ctx.query, 'suggested_only'));
    });

    // GET /_matrix/federation/v1/openid/userinfo?access_token= (no X-Matrix: third parties call it)
    r.get('/_matrix/federation/v1/openid/userinfo', async (ctx) => {
      const token = queryString(ctx.query, 'access_token');
      if (!token) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access_token');
      ctx.body = { sub: await d.accounts.openIdUser(token) };
    });
  };
}
