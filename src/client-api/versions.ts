import type Router from '@koa/router';
import type { Services } from '../services.js';

// Advertise only versions whose required endpoints this server answers.
export const SUPPORTED_VERSIONS = ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11'];

export function wellKnownRoutes(s: Services) {
  return (r: Router) => {
    // GET /_matrix/client/versions
    r.get('/_matrix/client/versions', (ctx) => {
      ctx.body = { versions: SUPPORTED_VERSIONS, unstable_features: { 'org.matrix.msc3882': true, 'org.matrix.msc2965.refresh_tokens': true } };
    });

    // GET /.well-known/matrix/client
    r.get('/.well-known/matrix/client', (ctx) => {
      ctx.body = { 'm.homeserver': { base_url: s.config.well_known.client_base_url ?? s.config.public_baseurl } };
    });

    // GET /.well-known/matrix/support
    r.get('/.well-known/matrix/support', (ctx) => {
      const support = s.config.well_known.support;
      if (!support.contacts.length && !support.support_page) {
        ctx.status = 404;
        ctx.body = { errcode: 'M_NOT_FOUND', error: 'No support information configured' };
        return;
      }
      ctx.body = {
        ...(support.contacts.length ? { contacts: support.contacts } : {}),
        ...(support.support_page ? { support_page: support.support_page } : {}),
      };
    });
  };
}

export function serverWellKnownRoutes(s: Services) {
  return (r: Router) => {
    // GET /.well-known/matrix/server: delegation, when configured.
    r.get('/.well-known/matrix/server', (ctx) => {
      if (!s.config.well_known.server) {
        ctx.status = 404;
        ctx.body = { errcode: 'M_NOT_FOUND', error: 'No delegation configured' };
        return;
      }
      ctx.body = { 'm.server': s.config.well_known.server };
    });

    // GET /_matrix/key/v2/server
    r.get('/_matrix/key/v2/server', (ctx) => {
      ctx.body = s.serverKeys.keyResponse();
    });
    r.get('/_matrix/key/v2/server/:keyId', (ctx) => {
      ctx.body = s.serverKeys.keyResponse();
    });
  };
}
