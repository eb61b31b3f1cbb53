import type Router from '@koa/router';
import type { Services } from '../services.js';

export const ROOM_VERSION_IDS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12'];

export function capabilitiesRoutes(s: Services) {
  return (r: Router) => {
    // GET /capabilities
    r.get('/capabilities', s.auth.requireAuth({ allowGuest: true }), (ctx) => {
      ctx.body = {
        capabilities: {
          'm.change_password': { enabled: true },
          'm.room_versions': {
            default: s.config.rooms.default_version,
            available: Object.fromEntries(ROOM_VERSION_IDS.map((v) => [v, 'stable'])),
          },
          'm.set_displayname': { enabled: true },
          'm.set_avatar_url': { enabled: true },
          'm.3pid_changes': { enabled: false },
          'm.get_login_token': { enabled: true },
          'm.profile_fields': { enabled: true },
        },
      };
    });
  };
}
