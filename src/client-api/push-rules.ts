// Push rules API (spec: "Push Rules: API"). Only the `global` scope exists.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { validateBody, queryString } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';

const EnabledBody = {
  type: 'object',
  properties: { enabled: { type: 'boolean' } },
  required: ['enabled'],
} as const;

const ActionsBody = {
  type: 'object',
  properties: { actions: { type: 'array' } },
  required: ['actions'],
} as const;

export function pushRulesRoutes(s: Services) {
  const { auth, pushRules } = s;
  const user = (ctx: Context) => requesterOf(ctx).userId;

  return (r: Router) => {
    // GET /pushrules/ — the whole ruleset, keyed by scope.
    const getAll = async (ctx: Context) => {
      ctx.body = await pushRules.rulesetFor(user(ctx));
    };
    r.get('/pushrules/', auth.requireAuth({ allowGuest: true }), getAll);
    r.get('/pushrules', auth.requireAuth({ allowGuest: true }), getAll);

    // GET /pushrules/global/ — the global ruleset.
    const getGlobal = async (ctx: Context) => {
      ctx.body = (await pushRules.rulesetFor(user(ctx))).global;
    };
    r.get('/pushrules/global/', auth.requireAuth({ allowGuest: true }), getGlobal);
    r.get('/pushrules/global', auth.requireAuth({ allowGuest: true }), getGlobal);

    // GET /pushrules/global/{kind}/{ruleId}
    r.get('/pushrules/global/:kind/:ruleId', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      ctx.body = await pushRules.getRule(user(ctx), ctx.params.kind, ctx.params.ruleId);
    });

    // PUT /pushrules/global/{kind}/{ruleId}?before=&after=
    r.put('/pushrules/global/:kind/:ruleId', auth.requireAuth(), validateBody({ type: 'object' }), async (ctx) => {
      await pushRules.putRule(user(ctx), ctx.params.kind, ctx.params.ruleId, ctx.request.body, {
        before: queryString(ctx.query, 'before'),
        after: queryString(ctx.query, 'after'),
      });
      ctx.body = {};
    });

    // DELETE /pushrules/global/{kind}/{ruleId}
    r.delete('/pushrules/global/:kind/:ruleId', auth.requireAuth(), async (ctx) => {
      await pushRules.deleteRule(user(ctx), ctx.params.kind, ctx.params.ruleId);
      ctx.body = {};
    });

    // GET /pushrules/global/{kind}/{ruleId}/enabled
    r.get('/pushrules/global/:kind/:ruleId/enabled', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const rule = await pushRules.getRule(user(ctx), ctx.params.kind, ctx.params.ruleId);
      ctx.body = { enabled: rule.enabled };
    });

    // PUT /pushrules/global/{kind}/{ruleId}/enabled
    r.put('/pushrules/global/:kind/:ruleId/enabled', auth.requireAuth(), validateBody(EnabledBody), async (ctx) => {
      await pushRules.setEnabled(user(ctx), ctx.params.kind, ctx.params.ruleId, (ctx.request.body as { enabled: boolean }).enabled);
      ctx.body = {};
    });

    // GET /pushrules/global/{kind}/{ruleId}/actions
    r.get('/pushrules/global/:kind/:ruleId/actions', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const rule = await pushRules.getRule(user(ctx), ctx.params.kind, ctx.params.ruleId);
      ctx.body = { actions: rule.actions };
    });

    // PUT /pushrules/global/{kind}/{ruleId}/actions
    r.put('/pushrules/global/:kind/:ruleId/actions', auth.requireAuth(), validateBody(ActionsBody), async (ctx) => {
      await pushRules.setActions(user(ctx), ctx.params.kind, ctx.params.ruleId, (ctx.request.body as { actions: unknown }).actions);
      ctx.body = {};
    });
  };
}
